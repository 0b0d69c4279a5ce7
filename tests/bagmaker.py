"""Write rosbag2 bags of camera + microphone topics directly (rosbags), with the variations
real recordings have: compressed images, audio formats and rates, inputs starting at different
times, extra topics, sqlite3 or mcap storage."""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from roma_ros.pipeline.typestore import typestore

NS = 1_000_000_000


@dataclass
class BagSpec:
    seconds: float = 6.0
    fps: float = 10.0
    width: int = 320
    height: int = 240
    compressed: bool = False
    sample_rate: int = 16000
    channels: int = 1
    sample_format: str = "S16LE"  # S16LE | S32LE | F32LE
    chunk_ms: int = 20
    camera_start: float = 0.0  # seconds after the bag start
    mic_start: float = 0.0
    extra_topic: bool = False
    sensors: bool = True  # False: only the extra topic (a bag of something else)
    storage: str = "sqlite3"
    start_s: int = 1_000_000_000
    image_topic: str = "/cam/image"
    audio_topic: str = "/mic/audio"
    info_topic: str = "/mic/audio_info"
    tone_hz: float = 440.0


def frame(t: float, spec: BagSpec) -> np.ndarray:
    img = np.zeros((spec.height, spec.width, 3), np.uint8)
    img[..., 0] = (int(t) * 40) % 256
    img[..., 1] = np.linspace(0, 255, spec.width, dtype=np.uint8)[None, :]
    return img


def pcm(samples: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "S16LE":
        return (samples * 32767).astype("<i2").view(np.uint8).reshape(-1)
    if fmt == "S32LE":
        return (samples * 2147483647).astype("<i4").view(np.uint8).reshape(-1)
    if fmt == "F32LE":
        return samples.astype("<f4").view(np.uint8).reshape(-1)
    raise ValueError(fmt)


def write_bag(path: Path, spec: BagSpec | None = None) -> Path:
    spec = spec or BagSpec()
    store = typestore()
    t = store.types
    Header, Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]

    def header(ns):
        return Header(stamp=Time(sec=ns // NS, nanosec=ns % NS), frame_id="sensor")

    plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
    records = []  # (log_ns, topic, msgtype, msg)
    start = spec.start_s * NS
    image_type = "sensor_msgs/msg/CompressedImage" if spec.compressed else "sensor_msgs/msg/Image"
    n_frames = int((spec.seconds - spec.camera_start) * spec.fps)
    for i in range(n_frames):
        ts = start + round((spec.camera_start + i / spec.fps) * NS)
        img = frame((ts - start) / NS, spec)
        if spec.compressed:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            msg = t[image_type](header=header(ts), format="jpeg", data=jpeg.reshape(-1))
        else:
            msg = t[image_type](header=header(ts), height=spec.height, width=spec.width, encoding="rgb8",
                                is_bigendian=0, step=spec.width * 3, data=img.reshape(-1))
        records.append((ts, spec.image_topic, image_type, msg))
    chunk = spec.sample_rate * spec.chunk_ms // 1000
    total = int((spec.seconds - spec.mic_start) * spec.sample_rate)
    tt = np.arange(total) / spec.sample_rate
    tone = 0.4 * np.sin(2 * np.pi * spec.tone_hz * tt)
    signal = np.repeat(tone[:, None], spec.channels, axis=1).reshape(-1)
    info = t["audio_common_msgs/msg/AudioInfo"](channels=spec.channels, sample_rate=spec.sample_rate,
                                                sample_format=spec.sample_format, bitrate=0, coding_format="wave")
    for k, first in enumerate(range(0, total - chunk + 1, chunk)):
        ts = start + round((spec.mic_start + first / spec.sample_rate) * NS)
        if k % 50 == 0:
            records.append((ts, spec.info_topic, "audio_common_msgs/msg/AudioInfo", info))
        data = pcm(signal[first * spec.channels:(first + chunk) * spec.channels], spec.sample_format)
        msg = t["audio_common_msgs/msg/AudioDataStamped"](
            header=header(ts), audio=t["audio_common_msgs/msg/AudioData"](data=data))
        records.append((ts, spec.audio_topic, "audio_common_msgs/msg/AudioDataStamped", msg))
    if spec.extra_topic:
        for i in range(int(spec.seconds)):
            records.append((start + i * NS, "/chatter", "std_msgs/msg/String", t["std_msgs/msg/String"](data=f"hi {i}")))
    if not spec.sensors:
        records = [r for r in records if r[1] == "/chatter"]
    records.sort(key=lambda r: r[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for ts, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], ts, store.serialize_cdr(msg, msgtype))
    return path
