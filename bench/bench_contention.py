"""The engine on a shared CPU: quiet vs loaded, torch vs ONNX Runtime, per thread count; prints
ONE JSON object.

    .venv/bin/python bench/bench_contention.py [--units 20] [--answers 3] [--threads 0,1,2]

A robot's CPU is always shared with other nodes. "loaded" starts one busy process per core (pure
Python loops, stopped when the measurement ends) next to the engine. Each (backend, threads) pair
runs in a fresh process, quiet then loaded, so nothing is shared between the two measurements but
the exported graphs. threads 0 is the engine's automatic choice (roma_ros.engine.factory.
auto_threads). Reported: per-unit latency (median/min/max after warm-up) and greedy decode
tokens/s, and the ratio loaded / quiet of the per-unit median (target: <= 3).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class BusyCores:
    """One busy process per core while the block runs (bounded: they stop with it)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        context = mp.get_context("spawn")
        self.stop = context.Event()
        self.procs = [context.Process(target=_spin, args=(self.stop,), daemon=True) for _ in range(self.n)]
        for proc in self.procs:
            proc.start()
        time.sleep(1.0)  # let them reach full speed
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def child(args) -> dict:
    """One measurement in this process: load, warm up, ingest units, answer questions."""
    from engine_fixtures import REAL_HW, make_units
    from summary import stats

    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import auto_threads, load_model, resolve_model_path

    model_path = resolve_model_path(args.model)
    cfg = EngineConfig(model_path=model_path, export_dir=args.export_dir, threads=args.child_threads,
                       segment_tokens=25, max_answer_tokens=25)
    model = load_model(cfg, args.child_backend)
    units = make_units(args.units + args.answers + 3, seed=7, hw=REAL_HW)
    unit_ms, tps = [], []
    for i, unit in enumerate(units[: args.units + 3]):
        t0 = time.perf_counter()
        model.ingest(unit)
        if i >= 3:
            unit_ms.append((time.perf_counter() - t0) * 1e3)
    for k in range(args.answers):
        model.ask("what do you see?", f"q{k}")
        result = model.ingest(units[args.units + 3 + k])
        n = sum(len(c.token_ids) for c in result.chunks)
        ms = result.timings_ms.get("decode", 0.0)
        if n and ms:
            tps.append(n / (ms / 1e3))
    import torch

    return {"threads_used": args.child_threads or auto_threads(), "torch_threads": torch.get_num_threads(),
            "unit_ms": stats(unit_ms), "decode_tokens_per_s": stats(tps) if tps else None}


def measure(backend: str, threads: int, export_dir: str, args) -> dict:
    command = [sys.executable, __file__, "--child-backend", backend, "--child-threads", str(threads),
               "--export-dir", export_dir, "--model", args.model, "--units", str(args.units),
               "--answers", str(args.answers)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if run.returncode != 0:
        raise RuntimeError(f"{backend} threads={threads}: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--answers", type=int, default=3)
    parser.add_argument("--threads", default="0,1,2", help="thread counts to compare (0 = auto)")
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--export-dir", default="")
    parser.add_argument("--child-backend", default="")
    parser.add_argument("--child-threads", type=int, default=0)
    args = parser.parse_args()
    if args.child_backend:
        print(json.dumps(child(args)))
        return 0

    from engine_fixtures import REAL_HW

    from roma_ros.engine.factory import resolve_model_path
    from roma_ros.engine.onnx_export import export_checkpoint

    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")]
    out = {"cores": cores, "busy_processes": cores, "units": args.units, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        export_checkpoint(resolve_model_path(args.model), tmp, frame_sizes=[REAL_HW])
        for backend in args.backends.split(","):
            for n in threads:
                quiet = measure(backend, n, tmp, args)
                with BusyCores(cores):
                    loaded = measure(backend, n, tmp, args)
                entry = {"quiet": quiet, "loaded": loaded,
                         "ratio_unit_ms_loaded_over_quiet": round(
                             loaded["unit_ms"]["median"] / quiet["unit_ms"]["median"], 2)}
                if quiet["decode_tokens_per_s"] and loaded["decode_tokens_per_s"]:
                    entry["ratio_decode_tps_quiet_over_loaded"] = round(
                        quiet["decode_tokens_per_s"]["median"] / loaded["decode_tokens_per_s"]["median"], 2)
                out["results"][f"{backend}/threads={n or 'auto'}"] = entry
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
