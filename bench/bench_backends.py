"""torch vs ONNX Runtime on the same model and stream, side by side; prints ONE JSON object.

    .venv/bin/python bench/bench_backends.py [--model embedded] [--units 30] [--repeats 3]

The model (default: the embedded ROMA-tiny) is exported to a temporary directory, then both
backends ingest the same units in alternation (so machine noise hits both alike): per-unit latency
(median/min/max over units, after 3 warm-up units) and greedy decode tokens/s (answers to the same
question). Ratios ORT / torch come from this one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

from engine_fixtures import REAL_HW, make_units  # noqa: E402
from roma_ros.engine.config import EngineConfig  # noqa: E402
from roma_ros.engine.factory import load_model, resolve_model_path  # noqa: E402
from roma_ros.engine.onnx_export import export_checkpoint  # noqa: E402
from summary import stats  # noqa: E402


SPLIT = ("vision", "audio", "prefill", "head")  # the engine's own per-unit timings


def decode_at_context(model, target: int, units, answers: int) -> dict:
    """Greedy decode tokens/s once the context holds about `target` tokens (units ingested from
    a reset until it does; the questions' own tokens come on top)."""
    model.reset()
    k = 0
    result = None
    while result is None or result.context_tokens < target:
        result = model.ingest(units[k % len(units)])
        k += 1
        if k > 10 * target:  # a context bound below the target
            break
    tps = []
    for q in range(answers):
        model.ask("what do you see?", f"c{target}.{q}")
        result = model.ingest(units[(k + q) % len(units)])
        n = sum(len(c.token_ids) for c in result.chunks)
        ms = result.timings_ms.get("decode", 0.0)
        if n and ms:
            tps.append(n / (ms / 1e3))
    return {"context_tokens": result.context_tokens, "tokens_per_s": stats(tps) if tps else None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--units", type=int, default=30)
    parser.add_argument("--answers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--contexts", default="100,1000,8000",
                        help="context lengths (tokens) at which decode tokens/s is measured; empty: skip")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model_path(args.model)
    units = make_units(args.units + args.answers * 2 + 3, seed=7, hw=REAL_HW)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        export_checkpoint(model_path, tmp, frame_sizes=[REAL_HW])
        export_s = time.perf_counter() - started
        models = {}
        for backend in ("torch", "onnxruntime"):
            cfg = EngineConfig(model_path=model_path, export_dir=tmp, segment_tokens=25, max_answer_tokens=25)
            models[backend] = load_model(cfg, backend)
        unit_ms = {b: [] for b in models}
        split = {b: {part: [] for part in SPLIT} for b in models}
        decode_tps = {b: [] for b in models}
        for i, unit in enumerate(units[: args.units + 3]):
            for backend, model in models.items():
                t0 = time.perf_counter()
                result = model.ingest(unit)
                if i >= 3:
                    unit_ms[backend].append((time.perf_counter() - t0) * 1e3)
                    for part in SPLIT:
                        split[backend][part].append(result.timings_ms.get(part, 0.0))
        for k in range(args.answers):
            for backend, model in models.items():
                model.ask("what do you see?", f"q{k}")
            for backend, model in models.items():
                result = model.ingest(units[args.units + 3 + k])
                n = sum(len(c.token_ids) for c in result.chunks)
                ms = result.timings_ms.get("decode", 0.0)
                if n and ms:
                    decode_tps[backend].append(n / (ms / 1e3))
        decode_at = {b: {} for b in models}
        contexts = [int(c) for c in args.contexts.split(",") if c]
        for backend, model in models.items():
            for target in contexts:
                decode_at[backend][str(target)] = decode_at_context(model, target, units, args.answers)
    out = {
        "model": "ROMA-tiny" if args.model == "embedded" else args.model, "frame": list(REAL_HW),
        "threads": torch.get_num_threads(), "export_s": round(export_s, 2),
        "unit_ms": {b: stats(v) for b, v in unit_ms.items()},
        "unit_split_ms": {b: {part: stats(v) for part, v in parts.items()} for b, parts in split.items()},
        "decode_tokens_per_s": {b: stats(v) for b, v in decode_tps.items() if v},
    }
    out["decode_tokens_per_s_at_context"] = decode_at
    out["ratio_unit_ms_ort_over_torch"] = round(out["unit_ms"]["onnxruntime"]["median"] / out["unit_ms"]["torch"]["median"], 3)
    if len(out["decode_tokens_per_s"]) == 2:
        out["ratio_decode_tps_ort_over_torch"] = round(
            out["decode_tokens_per_s"]["onnxruntime"]["median"] / out["decode_tokens_per_s"]["torch"]["median"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
