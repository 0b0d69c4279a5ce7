"""Benchmark of the speech gate (Silero VAD on onnxruntime, one thread); prints one JSON object.

    .venv/bin/python bench/bench_speech_gate.py [--units N] [--quick]

Per 1-s unit, gated as one continuous stream after a warm-up:
- gate: SpeechGate.gate (31-32 detector windows, keep-mask, bed fill) on real speech (the clips
  shipped with the package), on room noise and on digital silence, for both model files of the
  wheel: "sequence" (all of a unit's windows in one onnxruntime call, the default) and "window"
  (one call per window, the fallback);
- encoder: the same speech units' whole audio conditioning + mel features in the engine's encoder
  (roma-release profile) with the gate off and on, so the gate's share of a unit is visible.
Figures: median, p90, min and max in milliseconds over N units.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from roma_ros.core.speech_gate import SpeechGate  # noqa: E402

SR = 16_000
WARMUP = 5


def speech_units(n: int) -> list[np.ndarray]:
    """n seconds of continuous speech: the shipped clips, digital-silence edges trimmed, repeated."""
    with np.load(files("roma_ros.training") / "assets" / "speech_clips.npz") as clips:
        parts = []
        for key in sorted(clips.keys()):
            a = clips[key].astype(np.float32) / 32768.0
            nz = np.flatnonzero(a)
            parts.append(a[nz[0]: nz[-1] + 1])
    audio = np.concatenate(parts)
    audio = np.tile(audio, -(-(n + WARMUP) * SR // len(audio)))
    return [audio[k * SR:(k + 1) * SR] for k in range(n + WARMUP)]


def summary(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"median": round(statistics.median(ms), 3), "p90": round(ordered[int(0.9 * (len(ms) - 1))], 3),
            "min": round(ordered[0], 3), "max": round(ordered[-1], 3), "units": len(ms)}


def time_each(fn, units) -> list[float]:
    """Milliseconds of fn(unit) for each unit after the first WARMUP (which run untimed)."""
    out = []
    for k, u in enumerate(units):
        t = time.perf_counter()
        fn(u)
        if k >= WARMUP:
            out.append((time.perf_counter() - t) * 1e3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100, help="timed units per case (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 units (a smoke run)")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.units
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    bed = (rng.uniform(-1, 1, SR) * 1e-4).astype(np.float32)
    cases = {"speech": speech_units(n),
             "room_noise": [(rng.standard_normal(SR) * 0.01).astype(np.float32) for _ in range(n + WARMUP)],
             "digital_silence": [np.zeros(SR, np.float32)] * (n + WARMUP)}
    gate_ms, kept = {}, {}
    for backend in ("sequence", "window"):
        gate_ms[backend] = {}
        for case, units in cases.items():
            gate = SpeechGate(backend=backend)
            fractions = []
            gate_ms[backend][case] = summary(time_each(lambda u: fractions.append(gate.gate(u, bed).speech_fraction),
                                                       units))
            kept[case] = round(statistics.mean(fractions), 3)

    from engine_fixtures import tiny_engine

    encoder_ms = {}
    for mode in ("off", "on"):
        enc = tiny_engine(model_profile="roma-release", speech_gate=mode).encoder
        encoder_ms[f"gate_{mode}"] = summary(time_each(enc.audio_features, cases["speech"]))
    print(json.dumps({
        "bench": "speech_gate",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__, "ort_threads": 1},
        "gate_ms_per_unit": gate_ms,
        "mean_speech_fraction": kept,
        "encoder_audio_features_ms_per_unit": encoder_ms,
        "gate_on_over_off": round(encoder_ms["gate_on"]["median"] / encoder_ms["gate_off"]["median"], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
