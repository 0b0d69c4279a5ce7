"""Audio decoding: sample formats against known values, mono mixdown, non-finite samples, clear
errors, and the streaming resampler's continuity across chunks."""
import numpy as np
import pytest
import soxr

from roma_ros.core.audio_decode import SAMPLE_FORMATS, AudioFormat, StreamResampler, pcm_to_mono
from roma_ros.core.errors import DecodeError

# full-scale values: 0, +half, -full, +max for each integer format
INT_CASES = {
    "U8": (np.array([128, 192, 0, 255], "u1"), [0, 0.5, -1, 127 / 128]),
    "S8": (np.array([0, 64, -128, 127], "i1"), [0, 0.5, -1, 127 / 128]),
    "S16LE": (np.array([0, 16384, -32768, 32767], "<i2"), [0, 0.5, -1, 32767 / 32768]),
    "S16BE": (np.array([0, 16384, -32768, 32767], ">i2"), [0, 0.5, -1, 32767 / 32768]),
    "U16LE": (np.array([32768, 49152, 0, 65535], "<u2"), [0, 0.5, -1, 32767 / 32768]),
    "U16BE": (np.array([32768, 49152, 0, 65535], ">u2"), [0, 0.5, -1, 32767 / 32768]),
    "S24_32LE": (np.array([0, 2**22, -(2**23), 2**23 - 1], "<i4"), [0, 0.5, -1, (2**23 - 1) / 2**23]),
    "S24_32BE": (np.array([0, 2**22, -(2**23), 2**23 - 1], ">i4"), [0, 0.5, -1, (2**23 - 1) / 2**23]),
    "S32LE": (np.array([0, 2**30, -(2**31), 2**31 - 1], "<i4"), [0, 0.5, -1, (2**31 - 1) / 2**31]),
    "S32BE": (np.array([0, 2**30, -(2**31), 2**31 - 1], ">i4"), [0, 0.5, -1, (2**31 - 1) / 2**31]),
    "F32LE": (np.array([0, 0.5, -1, 0.25], "<f4"), [0, 0.5, -1, 0.25]),
    "F32BE": (np.array([0, 0.5, -1, 0.25], ">f4"), [0, 0.5, -1, 0.25]),
    "F64LE": (np.array([0, 0.5, -1, 0.25], "<f8"), [0, 0.5, -1, 0.25]),
    "F64BE": (np.array([0, 0.5, -1, 0.25], ">f8"), [0, 0.5, -1, 0.25]),
}


def s24(values, little: bool) -> bytes:
    out = bytearray()
    for v in values:
        b = (v & 0xFFFFFF).to_bytes(3, "little")
        out += b if little else b[::-1]
    return bytes(out)


@pytest.mark.parametrize("name", sorted(INT_CASES))
def test_sample_formats_known_values(name):
    stored, expected = INT_CASES[name]
    mono, nonfinite = pcm_to_mono(stored.tobytes(), AudioFormat(48000, 1, name))
    assert mono.dtype == np.float32 and nonfinite == 0
    np.testing.assert_allclose(mono, np.float32(expected), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name, little", [("S24LE", True), ("S24BE", False)])
def test_packed_24bit(name, little):
    data = s24([0, 2**22, -(2**23), 2**23 - 1, -1], little)
    mono, _ = pcm_to_mono(data, AudioFormat(48000, 1, name))
    np.testing.assert_allclose(mono, [0, 0.5, -1, (2**23 - 1) / 2**23, -1 / 2**23], atol=1e-7)


def test_all_formats_are_tested():
    assert set(INT_CASES) | {"S24LE", "S24BE"} == set(SAMPLE_FORMATS)


def test_lower_case_format_names_work():
    mono, _ = pcm_to_mono(np.array([16384], "<i2").tobytes(), AudioFormat(16000, 1, "s16le", "WAVE"))
    assert mono.tolist() == [0.5]


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_mixdown_averages_channels(channels):
    frames = np.tile(np.arange(channels, dtype=np.float32) / 10, (5, 1))  # 5 frames
    mono, _ = pcm_to_mono(frames.astype("<f4").tobytes(), AudioFormat(16000, channels, "F32LE"))
    np.testing.assert_allclose(mono, np.full(5, np.arange(channels).mean() / 10), atol=1e-7)


def test_stereo_s16_mixdown():
    interleaved = np.array([16384, -8192, 0, 32767], "<i2")  # L, R, L, R
    mono, _ = pcm_to_mono(interleaved.tobytes(), AudioFormat(48000, 2, "S16LE"))
    np.testing.assert_allclose(mono, [0.125, 32767 / 65536], atol=1e-7)


def test_nonfinite_samples_become_zero_and_are_counted():
    values = np.array([0.5, np.nan, np.inf, -np.inf, -0.5, 0.25], "<f4")
    mono, nonfinite = pcm_to_mono(values.tobytes(), AudioFormat(16000, 2, "F32LE"))
    assert nonfinite == 3
    np.testing.assert_allclose(mono, [0.25, 0.0, -0.125], atol=1e-7)


@pytest.mark.parametrize(
    "data, audio_format, reason, hint",
    [
        (b"\x00" * 4, AudioFormat(48000, 1, "S16LE", "mp3"), "unsupported_coding", "format:=wave"),
        (b"\x00" * 3, AudioFormat(48000, 1, "S16LE"), "bad_length", "whole number"),
        (b"\x00" * 6, AudioFormat(48000, 2, "S16LE"), "bad_length", "AudioInfo"),
        (b"\x00" * 4, AudioFormat(48000, 1, "ALAW"), "unsupported_sample_format", "S16LE"),
        (b"\x00" * 4, AudioFormat(0, 1, "S16LE"), "bad_sample_rate", "sample_rate"),
        (b"\x00" * 4, AudioFormat(10_000_000, 1, "S16LE"), "bad_sample_rate", "sample_rate"),
        (b"\x00" * 4, AudioFormat(48000, 0, "S16LE"), "bad_channels", "channel"),
    ],
)
def test_bad_audio_raises_typed_error(data, audio_format, reason, hint):
    with pytest.raises(DecodeError) as info:
        pcm_to_mono(data, audio_format)
    assert info.value.reason == reason
    assert hint in str(info.value)


def sine(rate: int, seconds: float, frequency: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [48000, 44100, 8000, 22050])
def test_streaming_resampler_matches_one_shot(rate):
    """Chunked resampling with state kept across chunks equals resampling the whole signal."""
    signal = sine(rate, 2.0, 440.0)
    resampler = StreamResampler(rate)
    chunks, i = [], 0
    rng = np.random.default_rng(rate)
    while i < signal.size:
        n = int(rng.integers(1, rate // 10))
        chunks.append(resampler.process(signal[i : i + n]))
        i += n
    chunks.append(resampler.flush())
    chunked = np.concatenate(chunks)
    whole = soxr.resample(signal, rate, 16000, "HQ")
    assert chunked.size == whole.size == round(signal.size * 16000 / rate)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert resampler.samples_out == chunked.size and resampler.samples_in == signal.size


def test_resampled_tone_keeps_its_frequency_and_has_no_seams():
    resampler = StreamResampler(48000)
    signal = sine(48000, 1.0, 1000.0)
    out = np.concatenate([resampler.process(signal[i : i + 960]) for i in range(0, 48000, 960)]
                         + [resampler.flush()])
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    assert abs(np.argmax(spectrum) * 16000 / out.size - 1000.0) < 2
    # a seam at a 20 ms chunk boundary would show as a jump far above a 1 kHz sine's slope
    inner = out[200:-200]
    assert np.abs(np.diff(inner)).max() < 0.5 * 2 * np.pi * 1000 / 16000 * 1.05


def test_identity_resampler_at_16k_passes_samples_through():
    resampler = StreamResampler(16000)
    samples = np.arange(100, dtype=np.float32)
    assert resampler.identity
    assert np.array_equal(resampler.process(samples), samples)
    assert resampler.flush().size == 0


def test_flushed_resampler_refuses_more_input():
    resampler = StreamResampler(48000)
    resampler.process(np.zeros(480, np.float32))
    resampler.flush()
    with pytest.raises(RuntimeError):
        resampler.process(np.zeros(480, np.float32))
