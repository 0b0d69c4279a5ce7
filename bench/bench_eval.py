"""Offline evaluation speed (`roma eval`'s replay path) in x real time; prints JSON.

    .venv/bin/python bench/bench_eval.py [--seconds 60] [--repeats 3] [--model-path DIR]

A generated bag (640x480 rgb8 camera at 30 fps, 48 kHz stereo S16LE mic in 20 ms chunks) is
replayed through the synchronizer pipeline and the engine session, exactly as `roma eval` does,
with the embedded ROMA-tiny model (or --model-path). Model loading is excluded; each repeat uses a
fresh session. Speed = stream seconds / wall seconds, "x real time" (higher is faster; the real-time factor is its inverse).
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
    from roma_ros.nodes.synchronizer_node import PARAMETERS, SynchronizerPipeline, synchronizer_settings

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
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
