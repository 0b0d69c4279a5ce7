"""ROS messages <-> roma_ros core types, without copying pixel or sample data on receive.

- stamps: builtin_interfaces Time/Duration <-> int nanoseconds
- sensor_msgs/Image, CompressedImage -> image_decode.RawImage / CompressedImage (the message's
  data array is referenced, not copied)
- audio_common_msgs/AudioInfo -> audio_decode.AudioFormat
- core Unit <-> roma_ros/MultimodalUnit (frames as rgb8 Images). unit_from_msg returns arrays
  that view the message's buffers (np.frombuffer), so keep the message alive while using them.

Arrays are never assigned to message fields directly (the generated setters would walk every
element: 50-175 ms per frame); they go through array.array.frombytes (one memcpy).
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image

from roma_ros.core.audio_decode import AudioFormat
from roma_ros.core.image_decode import CompressedImage, RawImage
from roma_ros.core.unit import NS_PER_S, Unit
from roma_ros.msg import MultimodalUnit


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or Duration) -> int nanoseconds."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_time(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Duration(sec=sec, nanosec=nanosec)


def raw_image_from_msg(msg) -> RawImage:
    """sensor_msgs/Image -> RawImage referencing the message's data."""
    return RawImage(
        height=msg.height,
        width=msg.width,
        encoding=msg.encoding,
        step=msg.step,
        data=msg.data,
        is_bigendian=bool(msg.is_bigendian),
    )


def compressed_image_from_msg(msg) -> CompressedImage:
    """sensor_msgs/CompressedImage -> CompressedImage referencing the message's data."""
    return CompressedImage(format=msg.format, data=msg.data)


def audio_format_from_info(info) -> AudioFormat:
    """audio_common_msgs/AudioInfo -> AudioFormat (not validated: see AudioFormat.validate)."""
    return AudioFormat(
        sample_rate=int(info.sample_rate),
        channels=int(info.channels),
        sample_format=info.sample_format or "S16LE",
        coding_format=info.coding_format,
    )


def _bytes_array(values: np.ndarray, typecode: str) -> array.array:
    out = array.array(typecode)
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))
    return out


def rgb_to_image_msg(frame: np.ndarray, stamp_ns: int, frame_id: str = "") -> Image:
    """(h, w, 3) RGB uint8 -> sensor_msgs/Image rgb8."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")
    msg = Image()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = _bytes_array(frame, "B")
    return msg


def rgb_from_image_msg(msg) -> np.ndarray:
    """sensor_msgs/Image rgb8 -> (h, w, 3) uint8 view of the message's data (honours step)."""
    if msg.encoding != "rgb8":
        raise ValueError(f"unit frames must be rgb8, got {msg.encoding!r}")
    buffer = np.frombuffer(msg.data, np.uint8)
    if buffer.size < msg.step * (msg.height - 1) + msg.width * 3 or msg.step < msg.width * 3:
        raise ValueError(f"rgb8 frame data ({buffer.size} bytes) does not fit "
                         f"{msg.width}x{msg.height} with step {msg.step}")
    return np.ndarray((msg.height, msg.width, 3), np.uint8, buffer, 0, (msg.step, 3, 1))


def unit_to_msg(unit: Unit) -> MultimodalUnit:
    """Core Unit -> roma_ros/MultimodalUnit (header.stamp = unit start)."""
    msg = MultimodalUnit()
    msg.header.stamp = ns_to_time(unit.start_ns)
    msg.header.frame_id = unit.frame_id
    msg.index = int(unit.index)
    msg.duration = ns_to_duration(unit.duration_ns)
    stamps = unit.frame_stamps_ns or [unit.start_ns] * len(unit.frames)
    msg.frames = [rgb_to_image_msg(f, s, unit.frame_id) for f, s in zip(unit.frames, stamps)]
    msg.audio = _bytes_array(unit.audio.astype(np.float32, copy=False), "f")
    msg.sample_rate = int(unit.sample_rate)
    msg.audio_coverage = float(unit.audio_coverage)
    msg.repeated_frames = min(int(unit.repeated_frames), 255)
    msg.stream_restart = bool(unit.stream_restart)
    msg.source_height, msg.source_width = (int(v) for v in unit.source_hw)
    msg.frame_rule = unit.frame_rule
    return msg


def unit_from_msg(msg) -> Unit:
    """roma_ros/MultimodalUnit -> core Unit (arrays view the message's buffers, read-only use)."""
    return Unit(
        index=int(msg.index),
        start_ns=stamp_to_ns(msg.header.stamp),
        duration_ns=stamp_to_ns(msg.duration),
        frames=[rgb_from_image_msg(frame) for frame in msg.frames],
        audio=np.frombuffer(msg.audio, np.float32),
        sample_rate=int(msg.sample_rate),
        frame_stamps_ns=[stamp_to_ns(frame.header.stamp) for frame in msg.frames],
        audio_coverage=float(msg.audio_coverage),
        repeated_frames=int(msg.repeated_frames),
        stream_restart=bool(msg.stream_restart),
        frame_id=msg.header.frame_id,
        source_hw=(int(msg.source_height), int(msg.source_width)),
        frame_rule=str(msg.frame_rule),
    )
