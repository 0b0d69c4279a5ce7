"""Test media made with PyAV: a video whose frames encode their own time, and a stereo tone."""
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_for_time(t: float, width: int, height: int) -> np.ndarray:
    """An RGB frame whose red channel encodes the second (t rounded down) and green the frame."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (int(t) * 40) % 256
    img[..., 1] = 128
    img[..., 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return img


def write_test_video(path: Path, seconds: float = 3.0, fps: int = 30, width: int = 320, height: int = 240,
                     sample_rate: int = 48000, tone_hz: float = 440.0, codec: str = "mpeg4",
                     audio_codec: str = "aac", faststart: bool = False) -> Path:
    """`faststart`: the index (moov) before the data, as streaming files have it."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"qscale": "2"} if codec == "mpeg4" else {}
        aus = out.add_stream(audio_codec, rate=sample_rate, layout="stereo")
        n_frames = int(seconds * fps)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_for_time(i / fps, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        total = int(seconds * sample_rate)
        t = np.arange(total) / sample_rate
        tone = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        block = 1024
        for start in range(0, total, block):
            piece = tone[start:start + block]
            stereo = np.stack([piece, piece])  # planar float
            frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in aus.encode(frame):
                out.mux(packet)
        for packet in aus.encode():
            out.mux(packet)
    return path
