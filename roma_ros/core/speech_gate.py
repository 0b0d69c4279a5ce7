"""Speech gate: keep speech, replace every other sample with the noise bed (docs/model.md section 5).

The released ROMA model heard speech on a near-silent noise bed and nothing else. On a live
microphone the gate restores that condition: a voice-activity detector (Silero VAD, whose ONNX
models ship inside the `silero-vad` wheel; run here with onnxruntime, nothing is downloaded and
neither torch nor torchaudio is imported) scores 32-ms windows (512 samples at 16 kHz). Windows
scoring at or above `threshold` are speech; speech runs shorter than `min_speech_ms` are dropped,
the others are widened by `pad_ms` on both sides, and every sample outside them becomes the bed
sample at the same place.

Streaming. The detector is recurrent (an LSTM state of 2 x 128) and sees, before each window, the
last 64 samples of the previous one. Both carry over from one `gate()` call to the next, so a
stream cut into 1-s units is scored window for window exactly as if it were fed in one piece:
the same windows, the same state, the same probabilities as silero-vad's own streaming wrapper.
A second (16,000 samples) is not a whole number of windows (31 x 512 + 128): the samples left
over are scored as the head of the next call's first window, and until then take the score of
the latest window. Across unit boundaries:
- a speech run that reaches the end of a unit is kept whatever its length (it may go on: the
  onset of a word is not dropped for being cut by the boundary); when it goes on, its length in
  the next unit counts from where it started;
- the padding after a run (of at least `min_speech_ms`) that ends near the end of a unit goes on
  into the next unit;
- the padding before a run cannot reach back into a unit already returned.

Two model files of the wheel compute the same thing: `silero_vad_16k_sequence.onnx` scores all of
a unit's windows in one call (the default, about half the cost) and `silero_vad.onnx` one window
per call (the fallback when the first is absent); their probabilities are bit-identical
(tests/test_speech_gate.py checks both against silero-vad's own wrapper). 16 kHz only.

One instance per stream (`reset()` starts a new one); not thread-safe. onnxruntime runs on one
thread: the gate runs beside the model and costs a few ms per unit.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
UNIT_SAMPLES = SAMPLE_RATE  # one unit = one second
WINDOW = 512  # samples per detector step at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees before each step
STATE = 128  # LSTM width: the state is (h, c), each (1, 1, 128)
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"  # input (n, 576), h, c -> probs (n,), h, c
WINDOW_MODEL = "silero_vad.onnx"  # input (1, 576), state (2, 1, 128), sr -> (1, 1), state
BACKENDS = ("auto", "sequence", "window")
INSTALL_HINT = "pip install silero-vad==6.2.3"


@dataclass(frozen=True)
class GateResult:
    audio: np.ndarray  # float32 (n,): the unit with every non-speech sample replaced by the bed
    speech_fraction: float  # share of the unit's samples kept
    probs: np.ndarray  # float32: speech probability of each detector window scored during this call


def silero_data_dir() -> Path:
    """The `data` folder of the installed silero-vad package, found without importing the package
    (its __init__ imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the speech gate needs the silero-vad package (its ONNX model ships in the "
                          f"wheel): {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def silero_model_path(backend: str = "auto") -> tuple[Path, str]:
    """(model file, backend actually used) for `backend` auto | sequence | window."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    data = silero_data_dir()
    candidates = {"sequence": [SEQUENCE_MODEL], "window": [WINDOW_MODEL],
                  "auto": [SEQUENCE_MODEL, WINDOW_MODEL]}[backend]
    for name in candidates:
        if (data / name).is_file():
            return data / name, ("sequence" if name == SEQUENCE_MODEL else "window")
    raise ImportError(f"the installed silero-vad has no {' or '.join(candidates)} in {data}: {INSTALL_HINT}")


def _one_second_of(x, name: str, n: int) -> np.ndarray:
    """`x` as a contiguous float32 (n,) array, or ValueError saying what is wrong."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        hint = " (scale integer PCM first, e.g. int16 / 32768)" if arr.dtype.kind in "iu" else ""
        raise ValueError(f"{name} must be floating-point samples in [-1, 1], got dtype {arr.dtype}{hint}")
    if arr.size != n or sum(d != 1 for d in arr.shape) > 1:
        raise ValueError(f"{name} must be one second of 16 kHz mono: shape ({n},), got {arr.shape}")
    return np.ascontiguousarray(arr.reshape(n), dtype=np.float32)


class SpeechGate:
    def __init__(self, threshold: float = 0.5, pad_ms: float = 100.0, min_speech_ms: float = 100.0,
                 sample_rate: int = SAMPLE_RATE, *, backend: str = "auto"):
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"the speech gate runs on {SAMPLE_RATE} Hz audio (Silero VAD's 512-sample "
                             f"windows), got {sample_rate}; resample first")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"speech threshold must be in (0, 1), got {threshold}")
        for label, value in (("pad_ms", pad_ms), ("min_speech_ms", min_speech_ms)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {value}")
        path, self.backend = silero_model_path(backend)
        try:
            import onnxruntime
        except ImportError as exc:
            raise ImportError("the speech gate runs Silero VAD on onnxruntime, which is not installed: "
                              "pip install onnxruntime") from exc
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1  # the gate runs beside the model: one core is plenty
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # the sequence model's unused initializers warn at load; errors only
        self.model_file = path
        self._session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                     providers=["CPUExecutionProvider"])
        self.threshold = float(threshold)
        self.sample_rate = sample_rate
        self.unit_samples = UNIT_SAMPLES
        self.pad = int(round(pad_ms * sample_rate / 1000))
        self.min_speech = int(round(min_speech_ms * sample_rate / 1000))
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """A new stream: the detector's state and context, the carried samples and runs start over."""
        self._h = np.zeros((1, 1, STATE), np.float32)
        self._c = np.zeros((1, 1, STATE), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._carry = np.zeros(0, np.float32)  # samples not yet scored (fewer than a window)
        self._last_prob = 0.0
        self._open_run = 0  # length of the speech run that reached the end of the previous unit
        self._pad_due = 0  # samples at the start of the next unit still inside a kept run's padding

    # ---- detector -----------------------------------------------------------------------
    def _score(self, windows: np.ndarray) -> np.ndarray:
        """Speech probability of consecutive (n, 512) windows, continuing the stream's state."""
        n = len(windows)
        if n == 0:
            return np.zeros(0, np.float32)
        contexts = np.empty((n, CONTEXT), np.float32)
        contexts[0] = self._context
        contexts[1:] = windows[:-1, -CONTEXT:]
        x = np.concatenate([contexts, windows], axis=1)  # (n, 576)
        if self.backend == "sequence":
            probs, self._h, self._c = self._session.run(["speech_probs", "hn", "cn"],
                                                        {"input": x, "h": self._h, "c": self._c})
            probs = np.asarray(probs, np.float32).reshape(n)
        else:
            state = np.concatenate([self._h, self._c])  # (2, 1, 128): the stock model's (h, c)
            probs = np.empty(n, np.float32)
            for i in range(n):
                out, state = self._session.run(None, {"input": x[i:i + 1], "state": state, "sr": self._sr})
                probs[i] = out[0, 0]
            self._h, self._c = state[0:1], state[1:2]
        self._context = windows[-1, -CONTEXT:].copy()
        return probs

    def speech_probabilities(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-sample speech probability of `audio`, the window scores), continuing the stream.
        `audio`: finite float32 samples; values beyond [-1, 1] are clipped for the detector."""
        x = np.clip(audio, -1.0, 1.0)
        carried = len(self._carry)
        stream = np.concatenate([self._carry, x]) if carried else x
        n = len(stream) // WINDOW
        probs = self._score(stream[: n * WINDOW].reshape(n, WINDOW))
        per_sample = np.empty(len(stream), np.float32)
        per_sample[: n * WINDOW] = np.repeat(probs, WINDOW)
        if n:
            self._last_prob = float(probs[-1])
        per_sample[n * WINDOW:] = self._last_prob
        self._carry = stream[n * WINDOW:].copy()
        return per_sample[carried:], probs

    # ---- mask ---------------------------------------------------------------------------
    def mask(self, per_sample: np.ndarray) -> np.ndarray:
        """Samples to keep (continuing the stream's runs): speech runs of at least min_speech
        samples, or reaching the unit's end, widened by pad (and the padding due from the
        previous unit)."""
        n = len(per_sample)
        speech = per_sample >= self.threshold
        edges = np.flatnonzero(np.diff(speech, prepend=False, append=False))
        keep = np.zeros(n, bool)
        keep[: self._pad_due] = True
        pad_due, open_run = 0, 0
        for start, end in zip(edges[0::2].tolist(), edges[1::2].tolist()):
            length = end - start + (self._open_run if start == 0 else 0)
            if end == n:
                open_run = length
            if length >= self.min_speech or end == n:
                keep[max(0, start - self.pad): end + self.pad] = True
            if length >= self.min_speech:  # a short open run's padding waits for the run to be long enough
                pad_due = max(0, end + self.pad - n)
        self._pad_due, self._open_run = pad_due, open_run
        return keep

    # ---- the gate -----------------------------------------------------------------------
    def gate(self, audio: np.ndarray, bed: np.ndarray) -> GateResult:
        """One unit (float samples, shape (16000,)): speech kept, every other sample the bed
        sample at the same place. Non-finite samples count as 0 for the detector and come out as
        the bed sample, so every output sample is the input sample or the bed sample."""
        x = _one_second_of(audio, "audio", self.unit_samples)
        b = _one_second_of(bed, "bed", self.unit_samples)
        if not np.isfinite(b).all():
            raise ValueError("bed must be finite")
        finite = np.isfinite(x)
        clean = x if finite.all() else np.where(finite, x, np.float32(0.0))
        per_sample, probs = self.speech_probabilities(clean)
        keep = self.mask(per_sample)
        out = np.where(keep & finite, x, b)
        return GateResult(out, float(np.count_nonzero(keep)) / len(keep), probs)
