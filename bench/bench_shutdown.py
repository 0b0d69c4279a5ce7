"""How fast each node process ends on SIGINT/SIGTERM while its input flows: prints ONE JSON object.

    .venv/bin/python bench/bench_shutdown.py [--runs 12] [--layers 4 384]

For the engine, one run per checkpoint size (a tiny random Qwen2.5-Omni Thinker in ROMA's layout
with the given number of layers: 384 layers take about a second a unit on a 2-core CPU, like a
large model on a GPU, so a signal usually lands mid-unit). Seconds from the signal to the
process's end: median and max, for nodes interrupted while running and while starting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint  # noqa: E402
from shutdown_stress import interrupt_at_random  # noqa: E402


def summarize(results) -> dict:
    out = {}
    for label, group in (("running", [r for r in results if r.ready]), ("starting", [r for r in results if not r.ready])):
        times = [r.exit_s for r in group]
        out[label] = {"runs": len(times), "median_exit_s": round(statistics.median(times), 3) if times else None,
                      "max_exit_s": round(max(times), 3) if times else None}
    out["clean"] = sum(r.returncode == 0 and "Traceback" not in r.output for r in results)
    out["runs"] = len(results)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="processes per configuration")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 384], help="engine checkpoint depths")
    args = parser.parse_args()
    report = {"bench": "shutdown", "synchronizer": summarize(interrupt_at_random("synchronizer", args.runs, [],
                                                                                 concurrent=2))}
    for layers in args.layers:
        checkpoint = write_checkpoint(Path(tempfile.mkdtemp()) / f"tiny{layers}", tiny_thinker(0, layers=layers),
                                      tiny_head(1))
        report[f"engine_{layers}_layers"] = summarize(interrupt_at_random(
            "engine", args.runs, [f"model_path:={checkpoint}"], concurrent=1, at_most_s=8.0))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
