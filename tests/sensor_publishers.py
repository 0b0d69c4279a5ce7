"""Stand-ins for a camera driver and a microphone driver, run as separate processes by tests.

    python -c "import sensor_publishers as s; s.camera(seconds=6)"

Both stamp messages from an ideal sensor clock (as a driver stamping capture times would) and
pace publishing in real time. They wait (up to 20 s) for a subscriber first, so nothing is lost
to discovery, then start at the wall-clock time `start_at` (epoch seconds) if it is still ahead,
so that two sensor processes started together begin together.

Camera frames are solid bgr8 colours that encode their own stamp (frame_colour), so a test can
check that a unit's frame is the one its stamp says. The microphone sends a stereo 440 Hz tone.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from roma_ros.dds import apply_dds_defaults

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3


def frame_colour(stamp_ns: int) -> tuple[int, int, int]:
    """The RGB colour of the camera frame stamped stamp_ns."""
    return (stamp_ns // 10_000_000) % 256, (stamp_ns // 2_560_000_000) % 256, 77


def _ns_to_time(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _wait_for_subscriber(node, publisher, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def _start(start_at: float | None) -> tuple[int, float]:
    """(stamp of the first message in ns, time.monotonic() at that moment)."""
    if start_at is not None and start_at > time.time():
        time.sleep(start_at - time.time())
    return time.time_ns(), time.monotonic()


def _pace(start_wall: float, offset_s: float) -> None:
    delay = start_wall + offset_s - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def camera(seconds: float = 6.0, fps: float = 30.0, width: int = 640, height: int = 480,
           topic: str = "image", start_at: float | None = None) -> None:
    from sensor_msgs.msg import Image

    apply_dds_defaults()
    rclpy.init()
    node = rclpy.create_node("fake_camera")
    publisher = node.create_publisher(Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    _wait_for_subscriber(node, publisher)
    start_ns, start_wall = _start(start_at)
    for i in range(int(seconds * fps)):
        stamp = start_ns + int(i * 1e9 / fps)
        r, g, b = frame_colour(stamp)
        msg = Image(height=height, width=width, encoding="bgr8", step=width * 3)
        msg.header.stamp = _ns_to_time(stamp)
        msg.header.frame_id = "camera"
        msg.data = np.broadcast_to(np.array([b, g, r], np.uint8), (height, width, 3)).tobytes()
        _pace(start_wall, i / fps)
        publisher.publish(msg)
    node.destroy_node()
    rclpy.shutdown()


def microphone(seconds: float = 6.0, rate: int = 48_000, channels: int = 2,
               chunk_ms: float = 20.0, topic: str = "audio", info_topic: str = "audio_info",
               start_at: float | None = None) -> None:
    from audio_common_msgs.msg import AudioDataStamped, AudioInfo

    apply_dds_defaults()
    rclpy.init()
    node = rclpy.create_node("fake_microphone")
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(AudioDataStamped, topic, qos)
    info_publisher = node.create_publisher(AudioInfo, info_topic, QoSProfile(depth=1))
    info = AudioInfo(channels=channels, sample_rate=rate, sample_format="S16LE", bitrate=0,
                     coding_format="wave")
    _wait_for_subscriber(node, publisher)
    _wait_for_subscriber(node, info_publisher)
    chunk = int(rate * chunk_ms / 1000)
    start_ns, start_wall = _start(start_at)
    info_publisher.publish(info)
    for k in range(int(seconds * rate / chunk)):
        t = (np.arange(k * chunk, (k + 1) * chunk)) / rate
        tone = (TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2")
        msg = AudioDataStamped()
        msg.header.stamp = _ns_to_time(start_ns + k * chunk * 1_000_000_000 // rate)
        msg.audio.data = np.repeat(tone, channels).tobytes()
        _pace(start_wall, k * chunk / rate)
        if k % 25 == 0:
            info_publisher.publish(info)
        publisher.publish(msg)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    {"camera": camera, "microphone": microphone}[sys.argv[1]](seconds=float(sys.argv[2]))
