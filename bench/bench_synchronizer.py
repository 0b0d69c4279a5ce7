"""Benchmark of the synchronizer's own code (DDS excluded); prints one JSON object.

    .venv/bin/python bench/bench_synchronizer.py [--quick]

Drives SynchronizerPipeline, the code the node's callbacks run, with real sensor_msgs /
audio_common_msgs messages:
- ingest: per-message cost per encoding of a frame no unit will use (header + reference; nothing
  is decoded) and of decoding + resizing one that is used;
- unit: cost of the call that completes a unit (2 frame decodes, audio slice, MultimodalUnit
  message), and of the message conversion alone;
- cpu_share: process CPU time of all callbacks for 10 s of stream (camera at 30 fps + 48 kHz
  stereo S16LE microphone in 20 ms chunks) divided by 10 s; 1.0 = one core.
Each figure is the median, min and max over repeated runs.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
from audio_common_msgs.msg import AudioDataStamped
from sensor_msgs.msg import CompressedImage, Image

from roma_ros.core.assembler import AssemblerConfig
from roma_ros.core.audio_decode import AudioFormat
from roma_ros.core.image_decode import ENCODINGS, decode_frame
from roma_ros.pipeline.convert import (
    compressed_image_from_msg,
    ns_to_time,
    raw_image_from_msg,
    unit_to_msg,
)
from roma_ros.pipeline.synchronizer import SynchronizerPipeline

S = 1_000_000_000
SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
RAW_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "yuv422_yuy2",
                 "bayer_rggb8"]
COMPRESSED = ["jpeg", "png"]
MIC_RATE, MIC_CHANNELS, CHUNK = 48_000, 2, 960  # 20 ms


def summary(values) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth picture with mild noise (compresses like a camera image, not like noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y + seed * 40) % 256], axis=2)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def raw_message(encoding: str, height: int, width: int, seed: int) -> Image:
    spec = ENCODINGS[encoding]
    rgb = scene(height, width, seed)
    if encoding in ("rgb8", "bgr8"):
        data = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        data = np.concatenate([rgb, np.full((height, width, 1), 255, np.uint8)], axis=2)
    elif encoding == "mono8":
        data = rgb[:, :, 1]
    elif encoding == "mono16":
        data = rgb[:, :, 1].astype("<u2") * 257
    elif encoding.startswith("yuv422"):
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)[:, :, :2]  # plausible values, layout only
    else:  # bayer
        data = rgb[:, :, 1]
    msg = Image(height=height, width=width, encoding=encoding,
                step=width * spec.channels * spec.depth // 8)
    msg.data = array.array("B", np.ascontiguousarray(data).tobytes())
    return msg


def compressed_message(fmt: str, height: int, width: int, seed: int) -> CompressedImage:
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else fmt),
                               cv2.cvtColor(scene(height, width, seed), cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", encoded.tobytes())
    return msg


def new_pipeline() -> SynchronizerPipeline:
    return SynchronizerPipeline(AssemblerConfig(), AudioFormat(MIC_RATE, MIC_CHANNELS, "S16LE"),
                                format_source="parameters")


def stamped(msg, stamp_ns: int):
    msg.header.stamp = ns_to_time(stamp_ns)
    return msg


def bench_ingest(pool: list, compressed: bool, repeats: int) -> dict:
    """Per-frame cost of frames that are not used (60 frames, 2 s, no unit completes)."""
    per_call = []
    for _ in range(repeats):
        pipeline = new_pipeline()
        feed = pipeline.compressed_image if compressed else pipeline.image
        times = []
        for i in range(60):
            msg = stamped(pool[i % len(pool)], 1000 * S + i * S // 30)
            t = time.perf_counter()
            feed(msg)
            times.append(time.perf_counter() - t)
        per_call.append(statistics.median(times) * 1e6)
    return summary(per_call)


def bench_decode(pool: list, compressed: bool, repeats: int) -> dict:
    """Decode + resize of a frame a unit uses."""
    convert = compressed_image_from_msg if compressed else raw_image_from_msg
    times = []
    for r in range(repeats):
        payload = convert(pool[r % len(pool)])
        t = time.perf_counter()
        decode_frame(payload)
        times.append((time.perf_counter() - t) * 1e3)
    return summary(times)


def audio_pool() -> list:
    t = np.arange(MIC_RATE) / MIC_RATE
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    pool = []
    for k in range(MIC_RATE // CHUNK):
        msg = AudioDataStamped()
        msg.audio.data = array.array("B", np.repeat(tone[k * CHUNK:(k + 1) * CHUNK], MIC_CHANNELS).tobytes())
        pool.append(msg)
    return pool


def stream_events(seconds: float, fps: float = 30.0):
    """(stamp, kind, index) for camera and microphone, in stamp order."""
    events = [(1000 * S + i * S // int(fps), "image", i) for i in range(int(seconds * fps))]
    events += [(1000 * S + k * CHUNK * S // MIC_RATE, "audio", k)
               for k in range(int(seconds * MIC_RATE / CHUNK))]
    return sorted(events)


def bench_stream(images: list, compressed: bool, audio: list, seconds: float, repeats: int) -> dict:
    """CPU share of the callbacks over `seconds` of stream, and the unit-completing call's cost."""
    shares, unit_ms = [], []
    events = stream_events(seconds)
    for _ in range(repeats):
        pipeline = new_pipeline()
        image_feed = pipeline.compressed_image if compressed else pipeline.image
        cpu = 0.0
        for stamp, kind, i in events:
            msg = stamped(images[i % len(images)] if kind == "image" else audio[i % len(audio)], stamp)
            feed = image_feed if kind == "image" else pipeline.audio
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            units = feed(msg)
            cpu += time.process_time() - t_cpu
            if units:
                unit_ms.append((time.perf_counter() - t_wall) * 1e3)
        assert pipeline.counters["units_out"] >= seconds - 2, pipeline.counters
        shares.append(cpu / seconds)
    return {"cpu_share_of_one_core": summary(shares), "unit_completing_call_ms": summary(unit_ms)}


def bench_unit_to_msg(repeats: int) -> dict:
    from roma_ros.core.unit import Unit

    unit = Unit(index=0, start_ns=1000 * S, duration_ns=S,
                frames=[scene(196, 280, 1), scene(196, 280, 2)],
                audio=np.zeros(16000, np.float32), frame_stamps_ns=[1000 * S, 1000 * S])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        unit_to_msg(unit)
        times.append((time.perf_counter() - t) * 1e3)
    return summary(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 5
    stream_seconds = 4.0 if args.quick else 10.0
    started = time.perf_counter()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": sys.version.split()[0], "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads()},
        "ingest": {}, "unit": {}, "cpu_share": {},
    }
    audio = audio_pool()
    for size_name, (height, width) in SIZES.items():
        entries = {}
        for encoding in RAW_ENCODINGS + COMPRESSED:
            compressed = encoding in COMPRESSED
            make = compressed_message if compressed else raw_message
            pool = [make(encoding, height, width, seed) for seed in range(4)]
            entries[encoding] = {
                "unused_frame_us": bench_ingest(pool, compressed, repeats),
                "used_frame_decode_ms": bench_decode(pool, compressed, 3 * repeats),
            }
        result["ingest"][size_name] = entries
        for encoding in ("rgb8", "jpeg"):
            compressed = encoding in COMPRESSED
            make = compressed_message if compressed else raw_message
            pool = [make(encoding, height, width, seed) for seed in range(4)]
            stream = bench_stream(pool, compressed, audio, stream_seconds, max(1, repeats // 2 + 1))
            result["cpu_share"][f"{size_name}@30fps {encoding} + 48kHz stereo mic"] = stream["cpu_share_of_one_core"]
            result["unit"][f"{size_name} {encoding}: unit-completing call ms"] = stream["unit_completing_call_ms"]
    result["unit"]["unit_to_msg_ms (2 frames 196x280 + 16000 samples)"] = bench_unit_to_msg(20)
    pipeline = new_pipeline()
    chunk = stamped(audio[0], 1000 * S)
    times = []
    for k in range(200):
        stamped(chunk, 1000 * S + k * 20_000_000)
        t = time.perf_counter()
        pipeline.audio(chunk)
        times.append((time.perf_counter() - t) * 1e6)
    result["ingest"]["audio_chunk_48k_stereo_20ms_us"] = summary(times)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
