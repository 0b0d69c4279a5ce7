"""Generated scenes written as rosbag2 bags (sqlite3): what a camera and a microphone would have
recorded, for the bundled sample, the tuning demonstration and tests.

Topics: /roma/image/compressed (CompressedImage, jpeg quality 85), /roma/audio (AudioDataStamped,
16 kHz mono S16LE, 20 ms chunks) and /roma/audio_info (AudioInfo, once per second), stamped (and
logged) at `start_ns` + media time.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from roma_ros.core.unit import NS_PER_S as NS
from roma_ros.core.unit import SAMPLE_RATE, Unit

IMAGE_TOPIC = "/roma/image/compressed"
AUDIO_TOPIC = "/roma/audio"
INFO_TOPIC = "/roma/audio_info"
CHUNK = SAMPLE_RATE // 50


def write_bag(bag: str | Path, frames: Sequence[tuple[int, np.ndarray]], audio: np.ndarray, start_ns: int) -> Path:
    """`frames`: (stamp ns, RGB uint8) pairs; `audio`: float32 mono at 16 kHz starting at `start_ns`."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from roma_ros.pipeline.typestore import typestore

    bag = Path(bag)
    if bag.exists():
        shutil.rmtree(bag)
    bag.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    T = store.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]

    def header(ns, frame_id):
        return Header(stamp=Time(sec=ns // NS, nanosec=ns % NS), frame_id=frame_id)

    records = []
    for ts, f in frames:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        msg = T["sensor_msgs/msg/CompressedImage"](header=header(ts, "camera"), format="jpeg", data=jpeg.reshape(-1))
        records.append((ts, 0, IMAGE_TOPIC, "sensor_msgs/msg/CompressedImage", msg))
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    info = T["audio_common_msgs/msg/AudioInfo"](channels=1, sample_rate=SAMPLE_RATE, sample_format="S16LE",
                                                bitrate=0, coding_format="wave")
    for k, first in enumerate(range(0, len(pcm), CHUNK)):
        ts = start_ns + first * NS // SAMPLE_RATE
        if k % 50 == 0:
            records.append((ts, 1, INFO_TOPIC, "audio_common_msgs/msg/AudioInfo", info))
        msg = T["audio_common_msgs/msg/AudioDataStamped"](
            header=header(ts, "microphone"),
            audio=T["audio_common_msgs/msg/AudioData"](data=pcm[first:first + CHUNK].view(np.uint8).copy()))
        records.append((ts, 2, AUDIO_TOPIC, "audio_common_msgs/msg/AudioDataStamped", msg))
    records.sort(key=lambda r: (r[0], r[1]))
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns = {}
        for ts, _, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], ts, store.serialize_cdr(msg, msgtype))
    return bag


def write_units_bag(bag: str | Path, units: Sequence[Unit], origin_ns: int) -> Path:
    """A bag of generated units (data.StreamGenerator): each frame at its stamp, the audio after
    it, all shifted by `origin_ns` (the annotation's origin)."""
    frames = [(origin_ns + ts, f) for u in units for ts, f in zip(u.frame_stamps_ns, u.frames)]
    audio = np.concatenate([np.asarray(u.audio, np.float32) for u in units])
    return write_bag(bag, frames, audio, origin_ns + units[0].start_ns)
