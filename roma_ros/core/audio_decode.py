"""Microphone chunks -> float32 mono samples, and a streaming resampler to 16 kHz (no rclpy).

Format names are GStreamer's (what audio_common's AudioInfo.sample_format carries): U8, S8,
S16LE/BE, U16LE/BE, S24LE/BE (3-byte packed), S24_32LE/BE (24 bits in 32-bit words), S32LE/BE,
F32LE/BE, F64LE/BE. Channels are interleaved; any count is mixed down to mono by averaging.

Non-finite float samples (NaN, +-Inf) are replaced by 0 and counted rather than rejecting the
chunk: the chunk's timing stays intact and its good samples are kept. Out-of-range float values
are left alone here; units are clipped to [-1, 1] when they are assembled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from roma_ros.core.errors import DecodeError

RAW_PCM_CODINGS = frozenset({"", "wave", "wav", "pcm", "raw", "lpcm"})
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class _SampleFormat:
    dtype: str  # numpy dtype of one stored sample ("V3" marks 3-byte packed 24-bit)
    offset: float  # subtracted first (unsigned formats)
    scale: float  # then multiplied: full scale -> [-1, 1)
    is_float: bool = False

    @property
    def width(self) -> int:
        return np.dtype(self.dtype).itemsize


SAMPLE_FORMATS: dict[str, _SampleFormat] = {
    "U8": _SampleFormat("u1", 128.0, 1 / 128),
    "S8": _SampleFormat("i1", 0.0, 1 / 128),
    "S16LE": _SampleFormat("<i2", 0.0, 1 / 32768),
    "S16BE": _SampleFormat(">i2", 0.0, 1 / 32768),
    "U16LE": _SampleFormat("<u2", 32768.0, 1 / 32768),
    "U16BE": _SampleFormat(">u2", 32768.0, 1 / 32768),
    "S24LE": _SampleFormat("V3", 0.0, 1 / 2**23),
    "S24BE": _SampleFormat("V3", 0.0, 1 / 2**23),
    "S24_32LE": _SampleFormat("<i4", 0.0, 1 / 2**23),
    "S24_32BE": _SampleFormat(">i4", 0.0, 1 / 2**23),
    "S32LE": _SampleFormat("<i4", 0.0, 1 / 2**31),
    "S32BE": _SampleFormat(">i4", 0.0, 1 / 2**31),
    "F32LE": _SampleFormat("<f4", 0.0, 1.0, is_float=True),
    "F32BE": _SampleFormat(">f4", 0.0, 1.0, is_float=True),
    "F64LE": _SampleFormat("<f8", 0.0, 1.0, is_float=True),
    "F64BE": _SampleFormat(">f8", 0.0, 1.0, is_float=True),
}


@dataclass(frozen=True)
class AudioFormat:
    """What the bytes of an audio chunk are (the fields of audio_common_msgs/AudioInfo)."""

    sample_rate: int
    channels: int = 1
    sample_format: str = "S16LE"
    coding_format: str = "wave"

    def validate(self) -> "AudioFormat":
        """Raise DecodeError unless this describes raw PCM we can read; returns self."""
        coding = self.coding_format.strip().lower()
        if coding not in RAW_PCM_CODINGS:
            raise DecodeError(
                "unsupported_coding",
                f"audio coding_format {self.coding_format!r} is compressed audio; roma_ros needs "
                "raw PCM: run audio_capture with format:=wave (its default is mp3) or decode the "
                "stream before roma_ros",
            )
        if self.sample_format.upper() not in SAMPLE_FORMATS:
            raise DecodeError(
                "unsupported_sample_format",
                f"audio sample_format {self.sample_format!r} is not supported; use one of "
                f"{', '.join(SAMPLE_FORMATS)}",
            )
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise DecodeError(
                "bad_sample_rate",
                f"audio sample_rate {self.sample_rate} Hz is outside "
                f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]; check the AudioInfo or parameters",
            )
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise DecodeError(
                "bad_channels",
                f"audio channel count {self.channels} is outside [1, {MAX_CHANNELS}]",
            )
        return self

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel."""
        return SAMPLE_FORMATS[self.sample_format.upper()].width * self.channels


def _samples(data, fmt: _SampleFormat, name: str) -> np.ndarray:
    """Stored samples -> float64/float32 values before scaling (1-D, interleaved)."""
    raw = np.frombuffer(data, np.uint8)
    if fmt.dtype == "V3":  # packed 24-bit: widen to int32 with the sign in the top byte
        triples = raw.reshape(-1, 3)
        order = (0, 1, 2) if name == "S24LE" else (2, 1, 0)
        widened = (
            triples[:, order[0]].astype(np.int32)
            | (triples[:, order[1]].astype(np.int32) << 8)
            | (triples[:, order[2]].astype(np.int32) << 16)
        )
        return ((widened << 8) >> 8).astype(np.float32)  # sign-extend bit 23
    values = raw.view(np.dtype(fmt.dtype))
    if fmt.dtype.endswith("i4") or fmt.dtype.endswith("f8"):
        return values.astype(np.float64)  # int32 does not fit float32 exactly
    return values.astype(np.float32)


def pcm_to_mono(data, audio_format: AudioFormat) -> tuple[np.ndarray, int]:
    """Raw PCM bytes -> (float32 mono samples in [-1, 1) for full-scale ints, count of
    non-finite float samples that were replaced by 0).

    Raises DecodeError for a compressed coding, an unknown sample format, an absurd rate or
    channel count, or a byte length that is not a whole number of sample frames.
    """
    audio_format.validate()
    name = audio_format.sample_format.upper()
    fmt = SAMPLE_FORMATS[name]
    nbytes = memoryview(data).nbytes
    if nbytes % audio_format.frame_bytes:
        raise DecodeError(
            "bad_length",
            f"audio chunk of {nbytes} bytes is not a whole number of {audio_format.channels}-"
            f"channel {name} frames ({audio_format.frame_bytes} bytes each); check AudioInfo",
        )
    values = _samples(data, fmt, name)
    nonfinite = 0
    if fmt.is_float:
        finite = np.isfinite(values)
        if not finite.all():
            nonfinite = int(values.size - np.count_nonzero(finite))
            values = np.where(finite, values, 0.0)
    if fmt.offset:
        values = values - fmt.offset
    if audio_format.channels > 1:
        values = values.reshape(-1, audio_format.channels).mean(axis=1)
    return (values * fmt.scale).astype(np.float32, copy=False), nonfinite


class StreamResampler:
    """Any rate -> `out_rate` mono, chunk by chunk, with the filter state kept across chunks
    (soxr ResampleStream, "HQ"). Identity (no filtering, no delay) when the rates are equal.

    soxr aligns its output with its input: output sample j stands for input time j / out_rate.
    It withholds the most recent few milliseconds until more input (or flush()) arrives, so
    the output so far always covers a prefix of the input's time span.
    """

    def __init__(self, in_rate: int, out_rate: int = 16_000, quality: str = "HQ"):
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)
        )
        self.samples_in = 0
        self.samples_out = 0
        self._flushed = False

    @property
    def identity(self) -> bool:
        return self._stream is None

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed mono float32 samples; returns the output that is ready."""
        if self._flushed:
            raise RuntimeError("this resampler was flushed; start a new one")
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.samples_in += samples.size
        out = samples if self._stream is None else self._stream.resample_chunk(samples)
        self.samples_out += out.size
        return out

    def flush(self) -> np.ndarray:
        """The withheld tail (end of a contiguous segment). The resampler is done afterwards."""
        already_flushed, self._flushed = self._flushed, True
        if self._stream is None or already_flushed:
            return np.zeros(0, np.float32)
        out = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self.samples_out += out.size
        return out
