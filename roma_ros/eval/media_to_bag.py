"""Turn a video file with audio (mp4, mkv, webm, ...) into a rosbag2 bag of sensor topics.

Frames become sensor_msgs/Image (rgb8) or CompressedImage (jpeg); audio becomes
audio_common_msgs/AudioDataStamped chunks of interleaved S16LE PCM at the file's own rate and
channel count, plus AudioInfo once per second of media. Every stamp, and the bag's log time, is
`start_time + media time`, so the bag replays exactly like a recording of live drivers.
A chunk's stamp is the time of its first sample.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from roma_ros.pipeline.typestore import typestore
from roma_ros.core.unit import NS_PER_S as NS

DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000  # used when the media has no creation time


@dataclass
class RecordOptions:
    image_topic: str = "/roma/image"
    audio_topic: str = "/roma/audio"
    audio_info_topic: str = "/roma/audio_info"
    compressed: bool = False
    jpeg_quality: int = 90
    max_pixels: int | None = None  # downscale frames above this many pixels (keeps bags small)
    fps: float | None = None  # keep at most this many frames per second
    audio_chunk_ms: int = 20
    start_ns: int | None = None
    frame_id: str = "camera"
    storage: str = "sqlite3"  # or "mcap"


@dataclass
class RecordStats:
    frames: int = 0
    audio_chunks: int = 0
    audio_samples: int = 0
    sample_rate: int = 0
    channels: int = 0
    start_ns: int = 0
    duration_s: float = 0.0
    topics: list[str] = field(default_factory=list)
    damaged_packets: int = 0  # packets that did not decode (skipped, as ffmpeg does)
    truncated_at_s: float | None = None  # the media ended early (cut file): time of the last data


def compressed_topic(image_topic: str) -> str:
    """image_transport's convention: CompressedImage lives on <image topic>/compressed (what a
    synchronizer with compressed:=true subscribes)."""
    return image_topic if image_topic.endswith("/compressed") else image_topic.rstrip("/") + "/compressed"


def _creation_time_ns(container) -> int | None:
    text = container.metadata.get("creation_time")
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * NS)
    except ValueError:
        return None


class _BagOut:
    """Typed message construction and writing for the three sensor topics."""

    def __init__(self, path: Path, opts: RecordOptions, has_video: bool, has_audio: bool):
        self.store = typestore()
        self.opts = opts
        plugin = StoragePlugin.MCAP if opts.storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        t = self.store.types
        self.Header, self.Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
        self.conns = {}
        if has_video:
            image_type = "sensor_msgs/msg/CompressedImage" if opts.compressed else "sensor_msgs/msg/Image"
            topic = compressed_topic(opts.image_topic) if opts.compressed else opts.image_topic
            self.conns["image"] = self.writer.add_connection(topic, image_type, typestore=self.store)
        if has_audio:
            self.conns["audio"] = self.writer.add_connection(
                opts.audio_topic, "audio_common_msgs/msg/AudioDataStamped", typestore=self.store)
            self.conns["info"] = self.writer.add_connection(
                opts.audio_info_topic, "audio_common_msgs/msg/AudioInfo", typestore=self.store)

    def header(self, stamp_ns: int):
        sec, nsec = divmod(stamp_ns, NS)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nsec), frame_id=self.opts.frame_id)

    def write(self, key: str, stamp_ns: int, msg) -> None:
        conn = self.conns[key]
        self.writer.write(conn, stamp_ns, self.store.serialize_cdr(msg, conn.msgtype))

    def image(self, stamp_ns: int, rgb: np.ndarray) -> None:
        t = self.store.types
        if self.opts.compressed:
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, self.opts.jpeg_quality])
            assert ok
            msg = t["sensor_msgs/msg/CompressedImage"](
                header=self.header(stamp_ns), format="jpeg", data=jpeg.reshape(-1))
        else:
            h, w = rgb.shape[:2]
            msg = t["sensor_msgs/msg/Image"](
                header=self.header(stamp_ns), height=h, width=w, encoding="rgb8", is_bigendian=0,
                step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))
        self.write("image", stamp_ns, msg)

    def audio(self, stamp_ns: int, pcm: np.ndarray) -> None:
        t = self.store.types
        data = t["audio_common_msgs/msg/AudioData"](data=pcm.astype("<i2").view(np.uint8).reshape(-1))
        self.write("audio", stamp_ns, t["audio_common_msgs/msg/AudioDataStamped"](
            header=self.header(stamp_ns), audio=data))

    def info(self, stamp_ns: int, channels: int, rate: int) -> None:
        msg = self.store.types["audio_common_msgs/msg/AudioInfo"](
            channels=channels, sample_rate=rate, sample_format="S16LE", bitrate=0, coding_format="wave")
        self.write("info", stamp_ns, msg)

    def close(self) -> None:
        self.writer.close()


def _downscale(rgb: np.ndarray, max_pixels: int | None) -> np.ndarray:
    h, w = rgb.shape[:2]
    if not max_pixels or h * w <= max_pixels:
        return rgb
    scale = (max_pixels / (h * w)) ** 0.5
    return cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def record_media(media: Path, out: Path, opts: RecordOptions | None = None) -> RecordStats:
    """Write `media` into a new bag at `out` (which must not exist)."""
    opts = opts or RecordOptions()
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new bag path")
    if not Path(media).is_file():
        raise FileNotFoundError(f"no media file at {media}")
    try:
        container = av.open(str(media))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot read {media}: {exc}") from None
    try:
        return _record(container, media, out, opts)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a partial bag behind
        raise
    finally:
        container.close()


def _packets(container, streams, stats: RecordStats):
    """Decoded frames of `streams`; damaged packets are skipped (counted) and a file cut short
    ends the stream where its data ends, as ffmpeg does."""
    demuxer = container.demux(*streams)
    last = 0.0
    declared = container.duration / av.time_base if container.duration else None
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            if declared is not None and last < declared - 0.5:  # the index promises more than is there
                stats.truncated_at_s = last
            return
        except av.error.FFmpegError:
            stats.truncated_at_s = last
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            stats.damaged_packets += 1
            continue
        for frame in frames:
            if frame.time is not None:
                last = max(last, frame.time)
            yield frame


def _record(container, media: Path, out: Path, opts: RecordOptions) -> RecordStats:
    stats = RecordStats()
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise ValueError(f"cannot read {media}: no video or audio stream found (not a media file, or cut short)")
    start = opts.start_ns if opts.start_ns is not None else (_creation_time_ns(container) or DEFAULT_START_NS)
    stats.start_ns = start
    bag = _BagOut(out, opts, video is not None, audio is not None)
    stats.topics = [c.topic for c in bag.conns.values()]
    try:
        next_frame_t = None
        resampler = chunk = None
        pending = np.zeros((0, 1), np.int16)
        audio_t0 = None
        next_info_t = 0.0
        last_t = 0.0
        for frame in _packets(container, [s for s in (video, audio) if s is not None], stats):
            if frame.time is None:
                continue
            if isinstance(frame, av.VideoFrame):
                if next_frame_t is not None and opts.fps and frame.time < next_frame_t - 1e-6:
                    continue
                next_frame_t = frame.time + (1.0 / opts.fps if opts.fps else 0.0)
                rgb = _downscale(frame.to_ndarray(format="rgb24"), opts.max_pixels)
                bag.image(start + round(frame.time * NS), rgb)
                stats.frames += 1
                last_t = max(last_t, frame.time)
                continue
            if resampler is None:
                channels = frame.layout.nb_channels
                stats.sample_rate, stats.channels = frame.sample_rate, channels
                resampler = av.AudioResampler(format="s16", layout=frame.layout, rate=frame.sample_rate)
                chunk = max(1, frame.sample_rate * opts.audio_chunk_ms // 1000)
                pending = np.zeros((0, channels), np.int16)
                audio_t0 = frame.time
            for converted in resampler.resample(frame):
                samples = converted.to_ndarray().reshape(-1, stats.channels)  # packed s16
                pending = np.concatenate([pending, samples])
            while len(pending) >= chunk:
                t = audio_t0 + stats.audio_samples / stats.sample_rate
                if t >= next_info_t:
                    bag.info(start + round(t * NS), stats.channels, stats.sample_rate)
                    next_info_t = t + 1.0
                bag.audio(start + round(t * NS), pending[:chunk])
                pending = pending[chunk:]
                stats.audio_samples += chunk
                stats.audio_chunks += 1
                last_t = max(last_t, t + chunk / stats.sample_rate)
        if audio_t0 is not None and len(pending):
            t = audio_t0 + stats.audio_samples / stats.sample_rate
            bag.audio(start + round(t * NS), pending)
            stats.audio_samples += len(pending)
            stats.audio_chunks += 1
            last_t = max(last_t, t + len(pending) / stats.sample_rate)
    finally:
        bag.close()
    stats.duration_s = last_t
    return stats
