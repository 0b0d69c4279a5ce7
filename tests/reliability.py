"""Helpers for the reliability tests (tests/test_reliability_*.py): node processes, /diagnostics
readers, RSS sampling and small synthetic sensor messages."""
from __future__ import annotations

import array
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from roma_ros.pipeline.convert import ns_to_time
from rosutil import start_python
from sensor_publishers import frame_colour

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "config" / "roma.yaml")
S = 1_000_000_000
TONE_HZ = 440.0


def start_node(kind: str, namespace: str, *params: str, env=None):
    """synchronizer_node or engine_node in its own process, config/roma.yaml plus `name:=value`s."""
    args = ["--ros-args", "--params-file", CONFIG, "-r", f"__ns:={namespace}"]
    for param in params:
        args += ["-p", param]
    return start_python("roma_ros.nodes.entry", f"{kind}_node", *args, env=env)  # as the executables do


class Diagnostics:
    """Latest key/values of each DiagnosticStatus on /diagnostics, by status name."""

    def __init__(self, node):
        self.latest: dict[str, dict[str, str]] = {}
        self.history: dict[str, list[dict[str, str]]] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 50)

    def _on(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            values["_level"] = str(status.level[0] if isinstance(status.level, bytes) else status.level)
            values["_message"] = status.message
            self.latest[status.name] = values
            self.history.setdefault(status.name, []).append(values)

    def get(self, name: str, key: str, default=0):
        value = self.latest.get(name, {}).get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value

    def errors(self, name: str) -> dict[str, int]:
        return {k[len("errors."):]: int(v) for k, v in self.latest.get(name, {}).items()
                if k.startswith("errors.")}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def image(stamp_ns: int, width: int = 160, height: int = 120, encoding: str = "rgb8", step: int | None = None,
          nbytes: int | None = None, frame_id: str = "camera") -> Image:
    """An rgb8 frame whose solid colour encodes its stamp (sensor_publishers.frame_colour)."""
    msg = Image(height=height, width=width, encoding=encoding,
                step=width * 3 if step is None else step)
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    if nbytes is None:
        data = np.broadcast_to(np.array(frame_colour(stamp_ns), np.uint8), (height, width, 3)).tobytes()
    else:
        data = bytes(nbytes)
    msg.data = array.array("B", data)
    return msg


def tone(first_sample: int, count: int, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(first_sample, first_sample + count) / rate
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def audio(stamp_ns: int, data: bytes) -> AudioDataStamped:
    msg = AudioDataStamped()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.audio.data = array.array("B", data)
    return msg


def audio_info(rate: int = 16000, channels: int = 1, fmt: str = "F32LE", coding: str = "wave") -> AudioInfo:
    return AudioInfo(channels=channels, sample_rate=rate, sample_format=fmt, bitrate=0, coding_format=coding)


def python_bin() -> str:
    return sys.executable


def alive(proc) -> bool:
    return proc.poll() is None and os.path.exists(f"/proc/{proc.pid}")


class SensorFeed:
    """A camera (10 fps, 160x120 rgb8, colour = stamp) and a microphone (100 ms F32LE 16 kHz
    tone chunks + AudioInfo) on `ns`, paced in real time on an ideal sensor clock, from a thread.
    Switch inputs with `camera`/`mic`; `offset_ns` shifts all stamps (a bag loop: negative)."""

    def __init__(self, node, ns: str, qos=None):
        import threading

        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = node.create_publisher(Image, f"{ns}/image", qos)
        self.audio_pub = node.create_publisher(AudioDataStamped, f"{ns}/audio", qos)
        self.info_pub = node.create_publisher(AudioInfo, f"{ns}/audio_info", qos)
        self.camera = self.mic = True
        self.offset_ns = 0
        self.ticks = 0
        self.now_ns = 0  # sensor-clock stamp of the latest tick (attacks aim relative to it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        import time

        start_ns = (time.time_ns() // S + 1) * S
        while time.time_ns() < start_ns:
            time.sleep(0.005)
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            base = start_ns + k * S // 10 + self.offset_ns
            self.now_ns = base
            try:
                if k % 10 == 0:
                    self.info_pub.publish(audio_info())
                if self.camera:
                    self.image_pub.publish(image(base + 30_000_000))
                if self.mic:
                    self.audio_pub.publish(audio(base, tone(k * 1600, 1600).tobytes()))
            except Exception:  # shutting down
                return
            k += 1
            self.ticks = k
            delay = start + k * 0.1 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def hd_sensors(ns: str, seconds: float, width: int = 1920, height: int = 1080, fps: float = 30.0,
               rate: int = 48_000, channels: int = 2) -> None:
    """Run as a process: a 1080p rgb8 camera at 30 fps and a 48 kHz stereo S16LE microphone (20 ms
    chunks + AudioInfo), real-time paced on an ideal clock. One frame buffer is reused (only the
    stamp changes), so the publisher itself costs little beyond DDS."""
    import time

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from roma_ros.dds import apply_dds_defaults

    apply_dds_defaults()
    rclpy.init()
    node = rclpy.create_node("hd_sensors")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    cam = node.create_publisher(Image, f"{ns}/image", qos)
    mic = node.create_publisher(AudioDataStamped, f"{ns}/audio", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    info = node.create_publisher(AudioInfo, f"{ns}/audio_info", QoSProfile(depth=1))
    deadline = time.monotonic() + 30
    while (cam.get_subscription_count() == 0 or mic.get_subscription_count() == 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    frame = image(S, width, height)
    chunk = rate // 50
    pcm = (np.repeat(tone(0, chunk * 50, rate), channels) * 32767).astype("<i2").reshape(50, -1)
    start_ns = (time.time_ns() // S + 1) * S
    while time.time_ns() < start_ns:
        time.sleep(0.002)
    start = time.monotonic()
    n_frames, n_chunks = int(seconds * fps), int(seconds * 50)
    i = k = 0
    while i < n_frames or k < n_chunks:
        t_frame = i / fps if i < n_frames else float("inf")
        t_chunk = k / 50 if k < n_chunks else float("inf")
        t = min(t_frame, t_chunk)
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if t_frame <= t_chunk:
            frame.header.stamp = ns_to_time(start_ns + int(i * S / fps))
            cam.publish(frame)
            i += 1
        else:
            if k % 25 == 0:
                info.publish(audio_info(rate, channels, "S16LE"))
            msg = AudioDataStamped()
            msg.header.stamp = ns_to_time(start_ns + k * S // 50)
            msg.audio.data = array.array("B", pcm[k % 50].tobytes())
            mic.publish(msg)
            k += 1
    node.destroy_node()
    rclpy.shutdown()


def memory_trend(samples_kb: list[float]) -> tuple[float, float]:
    """(rise, peak) of an RSS series, relative to its first third's median: `rise` compares the
    last third's median with the first's (a leak keeps rising), `peak` the highest run of five
    samples (a busy machine may hold a few more buffers for a while, then return them)."""
    third = max(1, len(samples_kb) // 3)
    first = statistics.median(samples_kb[:third])
    last = statistics.median(samples_kb[-third:])
    sustained = max(statistics.median(samples_kb[i:i + 5]) for i in range(max(1, len(samples_kb) - 4)))
    return (last - first) / first, (sustained - first) / first
