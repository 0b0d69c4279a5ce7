"""The speech gate (roma_ros/core/speech_gate.py) on real audio: the speech clips shipped with the
package, the sample scene's microphone track, and non-speech sounds. No mocks: the real Silero VAD
model from the installed silero-vad wheel, on onnxruntime."""
import subprocess
import sys
from importlib.resources import files

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

pytest.importorskip("onnxruntime")
from roma_ros.core.speech_gate import WINDOW, GateResult, SpeechGate, silero_data_dir  # noqa: E402

try:  # located, not imported: silero_vad's __init__ imports torch and sets its thread count
    silero_data_dir()
except ImportError:
    pytest.skip("silero-vad is not installed (pip install silero-vad==6.2.3)", allow_module_level=True)

SR = 16_000
SAMPLE_BAG = files("roma_ros") / "data" / "sample" / "bag"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Six seconds of continuous speech: the shipped clips, digital-silence edges trimmed."""
    with np.load(files("roma_ros.training") / "assets" / "speech_clips.npz") as clips:
        parts, total = [], 0
        for key in sorted(clips.keys()):
            a = clips[key].astype(np.float32) / 32768.0
            nz = np.flatnonzero(a)
            parts.append(a[nz[0]: nz[-1] + 1])
            total += len(parts[-1])
            if total >= 6 * SR:
                break
    return np.concatenate(parts)[: 6 * SR]


def bed(seed: int = 0) -> np.ndarray:
    """The engine's bed: uniform in [-1e-4, 1e-4]."""
    return (np.random.default_rng(seed).uniform(-1, 1, SR) * 1e-4).astype(np.float32)


def units(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[k * SR:(k + 1) * SR] for k in range(len(signal) // SR)]


def non_speech(sound: str, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    return {"room_noise": rng.standard_normal(SR) * 0.01,
            "low_white_noise": rng.uniform(-1, 1, SR) * 1e-3,
            "engine_hum": 0.2 * np.sin(2 * np.pi * 100 * t) + 0.05 * np.sin(2 * np.pi * 200 * t),
            "pure_tone": 0.3 * np.sin(2 * np.pi * 1000 * t),
            "digital_silence": np.zeros(SR),
            "clicks": np.where(np.arange(SR) % 4000 == 0, 0.8, 0.0)}[sound].astype(np.float32)


@pytest.fixture(scope="module")
def gate():
    return SpeechGate()


def test_speech_is_kept_unchanged(gate, speech):
    gate.reset()
    for k, unit in enumerate(units(speech)):
        b = bed(k)
        result = gate.gate(unit, b)
        assert isinstance(result, GateResult)
        assert result.audio.dtype == np.float32 and result.audio.shape == (SR,)
        kept = result.audio == unit
        assert result.speech_fraction > 0.8, (k, result.speech_fraction)
        assert kept.mean() == pytest.approx(result.speech_fraction, abs=1e-3)
        assert np.array_equal(result.audio[~kept], b[~kept])  # the rest is exactly the bed
        assert len(result.probs) in (31, 32) and result.probs.dtype == np.float32
        assert result.probs.max() > 0.9


@pytest.mark.parametrize("sound", ["room_noise", "low_white_noise", "engine_hum", "pure_tone",
                                   "digital_silence", "clicks"])
def test_non_speech_becomes_exactly_the_bed(sound):
    g = SpeechGate()
    for k in range(3):  # a stream of it, not only a first unit
        b = bed(10 + k)
        result = g.gate(non_speech(sound, seed=k), b)
        assert result.speech_fraction == 0.0, (sound, k, result.probs.max())
        assert np.array_equal(result.audio, b)


def test_speech_after_hum_is_found_within_the_unit(gate, speech):
    """Half a second of hum, then speech: the hum goes, the speech stays (with its padding)."""
    gate.reset()
    unit = np.concatenate([non_speech("engine_hum")[: SR // 2], speech[: SR // 2]])
    result = gate.gate(unit, bed(2))
    kept = result.audio == unit
    assert kept[: SR // 4].mean() == 0.0  # far from the speech: the bed
    assert kept[SR // 2 + SR // 10:].mean() > 0.9


def sample_scene_audio() -> np.ndarray:
    """The sample bag's 40 s microphone track (16 kHz mono S16LE; README of roma_ros/data/sample)."""
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Reader

    from roma_ros.pipeline.typestore import typestore

    store = typestore()
    chunks = []
    with Reader(str(SAMPLE_BAG)) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic == "/roma/audio_info":
                info = store.deserialize_cdr(raw, conn.msgtype)
                assert (info.channels, info.sample_rate, info.sample_format) == (1, SR, "S16LE")
            elif conn.topic == "/roma/audio":
                chunks.append(np.asarray(store.deserialize_cdr(raw, conn.msgtype).audio.data, np.uint8))
    return np.concatenate(chunks).view("<i2").astype(np.float32) / 32768.0


def test_the_sample_scene(gate):
    """Quiet room 0-20 s, alarm 20-25, other speech 25-28, "help" 30-34, quiet after: gated as one
    stream, only the speech seconds keep samples."""
    audio = sample_scene_audio()
    assert len(audio) == 40 * SR
    gate.reset()
    fractions = []
    for k, unit in enumerate(units(audio)):
        b = bed(k)
        result = gate.gate(unit, b)
        kept = result.audio == unit
        assert np.array_equal(result.audio[~kept], b[~kept])
        fractions.append(result.speech_fraction)
    quiet_and_alarm = fractions[:25] + fractions[34:]
    assert max(quiet_and_alarm) == 0.0, fractions  # the room noise and the alarm: exactly the bed
    for k in (26, 27, 31, 32, 33):
        assert fractions[k] > 0.5, (k, fractions)
    assert sum(fractions[25:34]) > 4.0


def reference_probs(signal: np.ndarray) -> np.ndarray:
    """silero-vad's own streaming wrapper (torch + its OnnxWrapper), one 512-sample window at a
    time over the whole signal."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # sets torch's threads to 1 on import

    torch.set_num_threads(threads)
    model = load_silero_vad(onnx=True)
    x = torch.from_numpy(np.ascontiguousarray(signal, np.float32))
    return np.array([float(model(x[i:i + WINDOW], SR)) for i in range(0, len(x) - WINDOW + 1, WINDOW)],
                    np.float32)


@pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")  # silero-vad's loader
@pytest.mark.parametrize("backend", ["sequence", "window"])
def test_units_are_scored_as_one_continuous_stream(speech, backend):
    """Gating 1-s units continues the detector: the windows scored over the units are those of the
    continuous stream, with silero-vad's own probabilities for them."""
    signal = np.concatenate([non_speech("room_noise"), speech[: 4 * SR], non_speech("engine_hum")])
    g = SpeechGate(backend=backend)
    assert g.backend == backend
    probs = [g.gate(u, bed(k)).probs for k, u in enumerate(units(signal))]
    assert [len(p) for p in probs] == [31, 31, 31, 32, 31, 31]  # 16000 = 31 x 512 + 128 carried
    np.testing.assert_allclose(np.concatenate(probs), reference_probs(signal), atol=1e-5)


def test_the_two_model_files_agree(speech):
    seq, win = SpeechGate(backend="sequence"), SpeechGate(backend="window")
    for k, unit in enumerate(units(speech)[:3]):
        a, b = seq.gate(unit, bed(k)), win.gate(unit, bed(k))
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
        assert np.array_equal(a.audio, b.audio)


def test_reset_repeats_the_stream_exactly_and_the_state_matters(speech):
    g = SpeechGate()
    stream = units(speech)[:3]
    first = [g.gate(u, bed(k)) for k, u in enumerate(stream)]
    g.reset()
    again = [g.gate(u, bed(k)) for k, u in enumerate(stream)]
    for a, b in zip(first, again):
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.probs, b.probs)
        assert a.speech_fraction == b.speech_fraction
    # the detector's memory matters: unit 2 alone scores differently from unit 2 after units 0-1
    g.reset()
    alone = g.gate(stream[2], bed(2))
    assert not np.array_equal(alone.probs[:5], first[2].probs[:5])
    # and a fresh gate equals a reset one
    assert np.array_equal(SpeechGate().gate(stream[0], bed(0)).audio, first[0].audio)


def per_sample(runs_ms: list[tuple[float, float]]) -> np.ndarray:
    """A unit's per-sample speech probabilities: 1.0 inside the (start, end) ms runs, else 0."""
    p = np.zeros(SR, np.float32)
    for start, end in runs_ms:
        p[int(start * 16): int(end * 16)] = 1.0
    return p


def test_runs_and_padding_across_unit_boundaries():
    """The keep-mask's rules, fed per-sample probabilities: short runs dropped, the rest padded by
    100 ms, a run cut by the unit's end kept and judged on its whole length, padding carried on."""
    g = SpeechGate()
    pad = 1600
    # a 50-ms run inside the unit goes; a 300-ms one stays with 100 ms each side; a 50-ms run at
    # the end of the unit stays (it may be the onset of a word)
    keep = g.mask(per_sample([(100, 150), (400, 700), (950, 1000)]))
    assert not keep[: 400 * 16 - pad].any()
    assert keep[400 * 16 - pad: 700 * 16 + pad].all() and not keep[700 * 16 + pad: 950 * 16 - pad].any()
    assert keep[950 * 16 - pad:].all()
    # it goes on 80 ms into the next unit: 130 ms in all, kept, and padded after
    keep = g.mask(per_sample([(0, 80)]))
    assert keep[: 80 * 16 + pad].all() and not keep[80 * 16 + pad:].any()
    # the same 80 ms at the start of a unit after a unit without speech at its end: dropped
    g.mask(per_sample([]))
    assert not g.mask(per_sample([(0, 80)])).any()
    # a long run ending 20 ms before the unit's end: its padding goes on 80 ms into the next unit
    g.mask(per_sample([(500, 980)]))
    keep = g.mask(per_sample([]))
    assert keep[: 80 * 16].all() and not keep[80 * 16:].any()
    # a short run ending at the unit's end and not going on: nothing carried
    g.mask(per_sample([(970, 1000)]))
    assert not g.mask(per_sample([])).any()
    # reset forgets the open run
    g.mask(per_sample([(980, 1000)]))
    g.reset()
    assert not g.mask(per_sample([(0, 80)])).any()


def test_non_finite_samples(gate, speech):
    b = bed(5)
    for unit in (np.full(SR, 0.1, np.float32), speech[:SR].copy()):
        unit[::7] = np.nan
        unit[3::11] = np.inf
        unit[5::13] = -np.inf
        gate.reset()
        result = gate.gate(unit, b)
        assert np.isfinite(result.audio).all() and np.isfinite(result.probs).all()
        bad = ~np.isfinite(unit)
        assert np.array_equal(result.audio[bad], b[bad])  # non-finite: the bed
        assert ((result.audio == unit) | (result.audio == b)).all()
    assert result.speech_fraction > 0.5  # the speech is still found around the holes


def test_input_validation(gate):
    ok = np.zeros(SR, np.float32)
    # converted: other float widths, a (1, n) or (n, 1) array, a list
    out = gate.gate(np.zeros((1, SR), np.float64), bed().reshape(SR, 1)).audio
    assert out.dtype == np.float32 and out.shape == (SR,)
    assert gate.gate([0.0] * SR, bed()).audio.shape == (SR,)
    with pytest.raises(ValueError, match=r"shape \(16000,\)"):
        gate.gate(np.zeros(SR - 1, np.float32), bed()[:-1])
    with pytest.raises(ValueError, match="bed must be one second"):
        gate.gate(ok, np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="mono"):
        gate.gate(np.zeros((2, SR // 2), np.float32), bed())
    with pytest.raises(ValueError, match="int16 / 32768"):
        gate.gate(np.zeros(SR, np.int16), bed())
    with pytest.raises(ValueError, match="floating-point"):
        gate.gate(np.zeros(SR, bool), bed())
    with pytest.raises(ValueError, match="bed must be finite"):
        gate.gate(ok, np.full(SR, np.nan, np.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        SpeechGate(sample_rate=8000)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            SpeechGate(threshold=bad)
    with pytest.raises(ValueError, match="pad_ms"):
        SpeechGate(pad_ms=-1)
    with pytest.raises(ValueError, match="min_speech_ms"):
        SpeechGate(min_speech_ms=float("inf"))
    with pytest.raises(ValueError, match="backend"):
        SpeechGate(backend="torch")


def test_no_torch_and_one_thread():
    """The gate imports neither torch nor silero_vad (whose __init__ imports torch) and runs
    onnxruntime on one thread."""
    code = ("import sys, numpy as np\n"
            "from roma_ros.core.speech_gate import SpeechGate\n"
            "g = SpeechGate()\n"
            "g.gate(np.zeros(16000, np.float32), np.zeros(16000, np.float32))\n"
            "o = g._session.get_session_options()\n"
            "print(o.intra_op_num_threads, o.inter_op_num_threads,\n"
            "      'torch' in sys.modules, 'silero_vad' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "False", "False"], out
    assert "Removing initializer" not in out.stderr  # onnxruntime's load-time warnings are off


@pytest.fixture(scope="module")
def property_gate():
    return SpeechGate()


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, SR, elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_any_finite_input_gives_input_or_bed_samples(property_gate, audio):
    b = bed(4)
    result = property_gate.gate(audio, b)
    assert np.isfinite(result.audio).all()
    assert ((result.audio == audio) | (result.audio == b)).all()
    assert 0.0 <= result.speech_fraction <= 1.0


@pytest.fixture(scope="module")
def speech_unit(speech):
    return speech[SR: 2 * SR].copy()


@settings(max_examples=25, deadline=None)
@given(gain=st.floats(0.0, 8.0, width=32),
       spikes=arrays(np.float32, SR, elements=st.floats(allow_infinity=True, width=32), fill=st.just(np.float32(0))))
def test_speech_with_arbitrary_samples_gives_input_or_bed_samples(property_gate, speech_unit, gain, spikes):
    """Real speech at any gain, some samples replaced by any float32 (NaN and inf included)."""
    audio = np.where(spikes != 0, spikes, speech_unit * np.float32(gain)).astype(np.float32)
    b = bed(6)
    result = property_gate.gate(audio, b)
    assert np.isfinite(result.audio).all() and np.isfinite(result.probs).all()
    assert ((result.audio == audio) | (result.audio == b)).all()


def test_engine_with_the_gate_on_feeds_the_bed_for_non_speech():
    from engine_fixtures import tiny_engine

    eng = tiny_engine(model_profile="roma-release", speech_gate="on")
    assert eng.model_profile.audio.speech_gate
    out = eng.encoder.condition_audio(non_speech("engine_hum"))
    assert np.abs(out).max() <= 1e-4  # the hum is gone: only the bed is left
