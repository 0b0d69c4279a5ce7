"""Offline evaluation speed (`roma eval`'s replay path) in x real time; prints JSON.

    .venv/bin/python bench/bench_eval.py [--seconds 60] [--repeats 3] [--model-path DIR]

A generated bag (640x480 rgb8 camera at 30 fps, 48 kHz stereo S16LE mic in 20 ms chunks) is
replayed through the synchronizer pipeline and the engine session, exactly as `roma eval` does,
with the embedded ROMA-tiny model (or --model-path). Model loading is excluded; each repeat uses a
fresh session. One extra replay with stage timers gives where the time goes, per unit: bag reading,
deserialization, frame decoding and resizing, the rest of the synchronizer, the engine (split into
vision, audio, prefill, head, decode). Speed = stream seconds / wall seconds, "x real time" (higher is faster; the real-time factor is its inverse).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


class StageTimes:
    """Wall time per stage of one replay, by wrapping the functions each stage runs (nested
    stages are subtracted from their callers, so the shares add up to the whole)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.engine_ms: dict[str, float] = {}

    def timed(self, name: str, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return call

    def wrap_pipeline(self, pipeline):
        for method in ("image", "compressed_image", "audio", "audio_info", "mark_silent"):
            setattr(pipeline, method, self.timed("synchronizer", getattr(pipeline, method)))
        return pipeline

    def wrap_session(self, session):
        process = self.timed("engine", session.process)

        def call(unit):
            step = process(unit)
            if step.result is not None:
                for part in ("vision", "audio", "prefill", "head", "decode"):
                    self.engine_ms[part] = self.engine_ms.get(part, 0.0) + step.result.timings_ms.get(part, 0.0)
            return step
        session.process = call
        return session

    def split(self, wall: float, units: int) -> dict:
        sync = self.seconds.get("synchronizer", 0.0)
        frames = self.seconds.get("frame_decode_resize", 0.0)
        engine = self.seconds.get("engine", 0.0)
        parts = {
            "bag_deserialize": self.seconds.get("deserialize", 0.0),
            "frame_decode_resize": frames,
            "synchronizer_other": sync - frames,
            "engine": engine,
        }
        parts["bag_read_and_bookkeeping"] = wall - sum(parts.values())
        out = {name: {"ms_per_unit": round(1e3 * sec / max(units, 1), 2), "share": round(sec / wall, 3)}
               for name, sec in parts.items()}
        out["engine_split_ms_per_unit"] = {k: round(v / max(units, 1), 2) for k, v in self.engine_ms.items()}
        return out


def profiled_replay(bag, model, config, fallback) -> dict:
    """One more replay with stage timers (not among the timed repeats: the wrappers cost a little)."""
    from roma_ros.core import assembler
    from roma_ros.engine.session import StreamSession
    from roma_ros.eval import runner
    from roma_ros.pipeline.synchronizer import SynchronizerPipeline

    times = StageTimes()
    originals = (runner.checked_deserialize, assembler.decode_frame)
    runner.checked_deserialize = times.timed("deserialize", runner.checked_deserialize)
    assembler.decode_frame = times.timed("frame_decode_resize", assembler.decode_frame)
    try:
        model.reset()
        session = times.wrap_session(StreamSession(model))
        started = time.perf_counter()
        result = runner.run_bag(bag, lambda: times.wrap_pipeline(SynchronizerPipeline(config, fallback)), session)
        wall = time.perf_counter() - started
    finally:
        runner.checked_deserialize, assembler.decode_frame = originals
    return {"wall_s": round(wall, 2), "units": len(result.units), "stages": times.split(wall, len(result.units))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-path", default="embedded", help="checkpoint directory or \"embedded\"")
    args = parser.parse_args()

    from bagmaker import BagSpec, write_bag
    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import load_model
    from roma_ros.engine.session import StreamSession
    from roma_ros.eval.runner import run_bag
    from roma_ros.pipeline.synchronizer import PARAMETERS, SynchronizerPipeline, synchronizer_settings

    with tempfile.TemporaryDirectory() as tmp:
        bag = write_bag(Path(tmp) / "bag", BagSpec(seconds=args.seconds, fps=30, width=640, height=480,
                                                   sample_rate=48000, channels=2))
        defaults = {name: default for name, (default, _doc) in PARAMETERS.items()}
        model = load_model(EngineConfig(model_path=args.model_path))
        factors, walls = [], []
        units = 0
        for _ in range(args.repeats):
            model.reset()
            session = StreamSession(model)
            config, fallback = synchronizer_settings(defaults.__getitem__)
            started = time.perf_counter()
            result = run_bag(bag, lambda: SynchronizerPipeline(config, fallback), session)
            wall = time.perf_counter() - started
            units = len(result.units)
            walls.append(wall)
            factors.append(result.duration_s / wall)
        profile = profiled_replay(bag, model, config, fallback)
    out = {
        "bench": "eval_speed",
        "model": args.model_path,
        "stream_seconds": args.seconds,
        "units": units,
        "camera": "640x480 rgb8 @ 30 fps",
        "mic": "48 kHz stereo S16LE, 20 ms chunks",
        "x_real_time": {"median": round(statistics.median(factors), 2), "min": round(min(factors), 2),
                        "max": round(max(factors), 2)},
        "wall_s": {"median": round(statistics.median(walls), 2), "min": round(min(walls), 2),
                   "max": round(max(walls), 2)},
        "profile": profile,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
