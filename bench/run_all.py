"""Run every benchmark in bench/ and write one JSON file plus a Markdown table (`make bench`).

    .venv/bin/python bench/run_all.py [--quick] [-o bench/results]

Each benchmark runs in its own process and prints one JSON object; this collects them with the
machine they ran on. --quick makes every benchmark CI-sized (a smoke run, not numbers to quote).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

BENCHES = {
    # name: (script, full-run args, quick args)
    "synchronizer": ("bench_synchronizer.py", [], ["--quick"]),
    "engine": ("bench_engine.py", [], ["--points", "10,200", "--sample", "5", "--latency-units", "5",
                                        "--decode-segments", "1", "--recompute-units", "30",
                                        "--sweep-contexts", "1024"]),
    "transport": ("bench_transport.py", [], ["--units", "20"]),
    "backends": ("bench_backends.py", [], ["--units", "8", "--answers", "1", "--contexts", "100,600"]),
    "contention": ("bench_contention.py", [], ["--units", "4", "--answers", "1", "--threads", "0"]),
    "eval": ("bench_eval.py", [], ["--seconds", "10", "--repeats", "1"]),
    "graph": ("bench_graph.py", [], ["--seconds", "16", "--warmup", "6"]),
    "speech_gate": ("bench_speech_gate.py", [], ["--quick"]),
    "attacks": ("bench_attacks.py", [], []),
}


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        info["cpu"] = model
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _cells(value, prefix=""):
    """Flatten one benchmark's JSON into (metric, value) rows; {median,min,max} dicts stay one row."""
    if isinstance(value, dict) and {"median", "min", "max"} <= set(value):
        yield prefix, f"{value['median']} (min {value['min']}, max {value['max']})"
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _cells(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        if len(value) <= 6 and all(not isinstance(v, (dict, list)) for v in value):
            yield prefix, ", ".join(map(str, value))
    else:
        yield prefix, str(value)


def markdown(results: dict) -> str:
    lines = [f"# roma_ros benchmarks\n", f"Machine: `{json.dumps(results['machine'])}`  ",
             f"Run: {results['started']} ({'quick' if results['quick'] else 'full'})\n",
             "| benchmark | metric | value |", "|---|---|---|"]
    for name, data in results["benchmarks"].items():
        if "error" in data:
            lines.append(f"| {name} | error | {data['error'][:120]} |")
            continue
        for metric, value in _cells(data):
            lines.append(f"| {name} | {metric} | {value} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-o", "--output", default=str(BENCH / "results"))
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES))
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
               "benchmarks": {}}
    failed = False
    for name, (script, full, quick) in BENCHES.items():
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(BENCH / script), *(quick if args.quick else full)],
                              capture_output=True, text=True)
        try:
            data = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            data = {"error": (proc.stderr or proc.stdout)[-500:]}
        if proc.returncode != 0 and "error" not in data:
            data["error"] = proc.stderr[-500:]
        failed |= "error" in data
        data["bench_wall_s"] = round(time.perf_counter() - started, 1)
        results["benchmarks"][name] = data
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
