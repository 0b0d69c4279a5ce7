"""Benchmark of the streaming ROMA engine; prints ONE JSON object.

    .venv/bin/python bench/bench_engine.py                       # tiny random model, CPU (CI-sized)
    .venv/bin/python bench/bench_engine.py --arch 7b --device cuda --dtype bfloat16 --points 10,1000
                                                                 # Qwen2.5-Omni-7B thinker, random weights

Measures (all with random weights: the cost does not depend on the weights' values):
- latency split per unit (vision tower, audio features + tower, LM prefill, speak head):
  median / min / max over `--latency-units` full-path units (realistic 336x168 frames, 101 tokens);
- decode tokens/s (greedy, one 25-token segment at a time, end token banned);
- per-unit cost at units 10 / 1,000 / 10,000 of one long stream WITH the bounded context
  (`--max-context`, eviction + re-basing active). To keep 10,000 units affordable the stream feeds
  precomputed unit encodings through the LM path (the encoder's cost does not depend on the stream
  position); the reported per-unit cost at a point = median LM+head time of `--sample` units
  around it + the median encoder time. Ratio unit N / unit 10 is reported;
- RSS when the stream reaches each point (memory must stay flat), peak RSS and the KV-cache bytes;
- what the context costs: the tokens each sampled unit attends to, the LM's floating-point work
  per unit from the architecture (projections + MLP, plus attention over the context), and the
  ratio that work gives between the points: the least any runtime can show on hardware whose
  time follows FLOPs (a CPU). "steady" compares the points at which the context is full, where
  a bounded runtime must be flat;
- `--sweep-contexts`: the LM cost per unit with a full context of each size, against the first
  point of the same engine's stream: the latency a deployment buys with its `max_context_tokens`;
- streaming vs full recompute at unit 300: streaming appends unit 300 to a cache holding units
  0..299 (no eviction, same content); full recompute runs the LM over prefix + 300 units in one
  forward (what a non-streaming runtime does every time it needs a decision). Both exclude the
  encoders (shared); the ratio including one unit's encoding is reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine_fixtures import REAL_HW, make_tokenizer, make_units, tiny_head, tiny_prompt, tiny_thinker  # noqa: E402
from roma_ros.engine.checkpoint import build_thinker  # noqa: E402
from roma_ros.engine.config import EngineConfig  # noqa: E402
from roma_ros.engine.roma import RomaModel  # noqa: E402
from roma_ros.engine.speak_head import SpeakHead  # noqa: E402
from summary import stats  # noqa: E402


def omni7b_config(text_layers: int = 28, tower_layers: int = 32):
    """Qwen2.5-Omni-7B thinker architecture (config.json of the released model). Fewer layers
    give a 7B-shaped proxy that fits a CPU: every LM layer costs the same, so the LM's cost ratio
    between two context sizes is that of the full model."""
    from transformers import Qwen2_5OmniThinkerConfig

    cfg = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=text_layers,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                         tie_word_embeddings=False),
        vision_config=dict(depth=tower_layers, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < tower_layers] or [tower_layers - 1],
                           window_size=112, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3, hidden_act="silu"),
        audio_config=dict(encoder_layers=tower_layers, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          output_dim=3584, num_mel_bins=128, max_source_positions=1500, n_window=100),
        audio_token_index=151646, video_token_index=151656, image_token_index=151655,
        audio_start_token_id=151647, audio_end_token_id=151648, vision_start_token_id=151652,
        vision_end_token_id=151653, tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def build(args, max_context: int, position_limit: int = 0) -> RomaModel:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.arch == "tiny":
        thinker = tiny_thinker(0, max_positions=32768, dtype=dtype).to(args.device)
        head = tiny_head(1)
    else:
        torch.manual_seed(0)
        thinker = build_thinker(omni7b_config(args.text_layers, args.tower_layers), dtype=dtype, device=args.device, init_weights=True)
        head = SpeakHead(3584, (-4, -3, -2, -1), "mlp", 896)
    cfg = EngineConfig(max_context_tokens=max_context, position_limit=position_limit, device=args.device,
                       dtype=args.dtype)
    return RomaModel(cfg, thinker, head, make_tokenizer(), prompt=tiny_prompt(), profile=True)


def lm_unit_gflop(tcfg, n: int, context: float) -> float:
    """Floating-point work of one LM forward of n new tokens over `context` cached ones: the
    per-token projections and MLP, plus QK^T and PV over everything each token sees."""
    hidden, inter, layers = tcfg.hidden_size, tcfg.intermediate_size, tcfg.num_hidden_layers
    heads, kv_heads = tcfg.num_attention_heads, tcfg.num_key_value_heads
    head_dim = getattr(tcfg, "head_dim", None) or hidden // heads
    per_token = 2 * (2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter)
    seen = n * context + n * (n + 1) / 2  # keys summed over the n queries
    return layers * (n * per_token + 4 * heads * head_dim * seen) / 1e9


def rss_mib() -> float:
    """Resident set size now (not the peak): flat along the stream means bounded memory."""
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def sync(dev):
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


def ban_end(eng):
    bad = torch.tensor([eng.end_id] + eng._ids["unfinished_marker"], device=eng.device)
    def proc(logits, gen):
        logits = logits.clone()
        logits[bad] = -1e9
        return logits
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--max-context", type=int, default=8192)
    ap.add_argument("--points", default="10,1000,10000")
    ap.add_argument("--sample", type=int, default=21, help="units measured around each point")
    ap.add_argument("--latency-units", type=int, default=30)
    ap.add_argument("--decode-segments", type=int, default=4)
    ap.add_argument("--recompute-units", type=int, default=300)
    ap.add_argument("--skip-recompute", action="store_true")
    ap.add_argument("--sweep-contexts", default="2048,4096,8192",
                    help="max_context_tokens sizes to cost with a full context ('' skips)")
    ap.add_argument("--frame-hw", default="", help="HxW of the camera frames (default 168x336; the "
                    "paper's setting is 360x640), resized by the ROMA rule")
    ap.add_argument("--text-layers", type=int, default=28, help="7b: LM layers (28 = the real model)")
    ap.add_argument("--tower-layers", type=int, default=32, help="7b: vision/audio tower layers (32 = real)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    hw = tuple(int(v) for v in args.frame_hw.split("x")) if args.frame_hw else REAL_HW
    out = {"arch": args.arch, "device": args.device, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
           "frame_hw": list(hw)}
    if args.arch == "7b":
        out["layers"] = {"text": args.text_layers, "towers": args.tower_layers}

    # ---- 1. latency split, full path -----------------------------------------------------------
    eng = build(args, args.max_context)
    units = make_units(args.latency_units + 3, seed=1, hw=hw)
    for u in units[:3]:
        eng.ingest(u)  # warm-up
    rows = [eng.ingest(u).timings_ms for u in units[3:]]
    out["tokens_per_unit"] = int(eng.encoder.encode(units[0]).embeds.shape[1])
    out["latency_ms"] = {k: stats([r[k] for r in rows]) for k in ("vision", "audio", "prefill", "head", "total")}

    # ---- 2. decode: one response, segments back to back (no unit in between: decode time only) ----
    seg_times = []
    eng2 = build(args, args.max_context)
    for u in units[:3]:
        eng2.ingest(u)
    eng2.logits_processor = ban_end(eng2)
    for _ in range(args.decode_segments):
        sync(eng2.device)
        t = time.perf_counter()
        ch = eng2._segment() if eng2.answering else eng2.respond()
        sync(eng2.device)
        seg_times.append((sum(len(c.token_ids) for c in ch), time.perf_counter() - t))
    tok = sum(n for n, _ in seg_times)
    out["decode"] = {"segments": len(seg_times), "tokens": tok,
                     "tokens_per_s": round(tok / sum(t for _, t in seg_times), 2),
                     "segment_ms": stats([t * 1e3 for _, t in seg_times])}
    del eng, eng2

    # ---- 3. per-unit cost along a long bounded stream --------------------------------------------
    points = [int(p) for p in args.points.split(",")]
    eng = build(args, args.max_context)
    pool_units = make_units(16, seed=2, hw=hw)
    pool = [eng.encoder.encode(u) for u in pool_units]
    enc_ms = []
    for u in pool_units:
        sync(eng.device)
        t = time.perf_counter()
        eng.encoder.encode(u)
        sync(eng.device)
        enc_ms.append((time.perf_counter() - t) * 1e3)
    enc_med = statistics.median(enc_ms)
    last = max(points) + args.sample // 2 + 1
    lm_ms = np.zeros(last)
    context = np.zeros(last)  # tokens cached before each unit: what it attends to
    full_at = None
    rss_at = {}
    t_start = time.perf_counter()
    for i in range(last):
        context[i] = eng.cache.used
        r = eng.ingest_encoded(pool[i % len(pool)], i)
        if full_at is None and eng.cache.evicted_total:
            full_at = i + 1
        lm_ms[i] = r.timings_ms["prefill"] + r.timings_ms["head"]
        if i + 1 in points:
            rss_at[i + 1] = rss_mib()
    stream_s = time.perf_counter() - t_start
    half = args.sample // 2
    tcfg = eng.runtime.config.text_config
    n_tok = int(pool[0].embeds.shape[1])
    per_point = {}
    for p in points:
        lo, hi = max(0, p - 1 - half), min(last, p + half)
        lm = float(np.median(lm_ms[lo:hi]))
        ctx = float(np.median(context[lo:hi]))
        per_point[str(p)] = {"lm_head_ms_median": round(lm, 3), "lm_head_ms_min": round(float(lm_ms[lo:hi].min()), 3),
                             "lm_head_ms_max": round(float(lm_ms[lo:hi].max()), 3),
                             "unit_cost_ms": round(lm + enc_med, 3), "sample_units": [lo + 1, hi],
                             "context_tokens": int(ctx), "lm_gflop": round(lm_unit_gflop(tcfg, n_tok, ctx), 4),
                             "rss_mib": rss_at[p]}
    base = per_point[str(points[0])]
    for p in points:
        row = per_point[str(p)]
        row["ratio_to_first"] = round(row["unit_cost_ms"] / base["unit_cost_ms"], 4)
        row["lm_ratio_to_first"] = round(row["lm_head_ms_median"] / base["lm_head_ms_median"], 4)
        row["lm_flop_ratio_to_first"] = round(row["lm_gflop"] / base["lm_gflop"], 4)
    s = eng.cache.stats()
    out["stream"] = {"units": last, "max_context_tokens": args.max_context, "wall_s": round(stream_s, 1),
                     "context_full_at_unit": full_at, "encoder_ms_median": round(enc_med, 3), "points": per_point,
                     "evicted_tokens": s["evicted_total"], "rebases": s["rebases"], "final_max_position": s["max_pos"],
                     "context_tokens": s["used"], "kv_cache_mib": round(s["tensor_bytes"] / 2**20, 2)}
    del eng

    # ---- 3b. the price of the context size: LM cost per unit with a full context of each size -----
    if args.sweep_contexts:
        sweep = {}
        early = slice(max(0, points[0] - 1 - half), points[0] + half)  # the first point's units
        for size in [int(c) for c in args.sweep_contexts.split(",")]:
            eng = build(args, size)
            fill = size // n_tok + 2  # the context is full (and evicting) from here on
            times, ctx = [], []
            for i in range(max(fill, early.stop) + args.sample):
                ctx.append(eng.cache.used)
                r = eng.ingest_encoded(pool[i % len(pool)], i)
                times.append(r.timings_ms["prefill"] + r.timings_ms["head"])
            # both figures from this one engine, minutes apart at most: the ratio is not machine drift
            first, full = statistics.median(times[early]), statistics.median(times[-args.sample:])
            ctx_first, ctx_full = statistics.median(ctx[early]), statistics.median(ctx[-args.sample:])
            sweep[str(size)] = {"context_tokens": int(ctx_full), "lm_head_ms": stats(times[-args.sample:]),
                                f"lm_head_ms_at_unit_{points[0]}": round(first, 3),
                                "unit_cost_ms": round(full + enc_med, 3),
                                "ratio_to_first_point": round((full + enc_med) / (first + enc_med), 4),
                                "lm_ratio_to_first_point": round(full / first, 4),
                                "lm_flop_ratio_to_first_point": round(
                                    lm_unit_gflop(tcfg, n_tok, ctx_full) / lm_unit_gflop(tcfg, n_tok, ctx_first), 4)}
            del eng
        out["context_sweep"] = sweep

    # ---- 4. streaming vs full recompute at unit N ------------------------------------------------
    if not args.skip_recompute:
        n = args.recompute_units
        eng = build(args, max(args.max_context, 200 + (n + 2) * out["tokens_per_unit"]), position_limit=0)
        eng.trace = True
        eng.reset()  # re-feed the prefix with tracing on
        for i in range(n - 1):
            eng.ingest_encoded(pool[i % len(pool)], i)
        stream_ms = []
        for rep in range(3):  # unit n appended to units 0..n-1 (reset the append each time)
            r = eng.ingest_encoded(pool[(n - 1) % len(pool)], n - 1)
            stream_ms.append(r.timings_ms["prefill"] + r.timings_ms["head"])
            gid = max(g for g in eng.cache.groups if eng.cache.groups[g].kind == "unit")
            if rep < 2:
                eng.cache.drop_group(gid)
                eng.trace_log.pop()
        embeds = torch.cat([e["embeds"] for e in eng.trace_log], 1)
        pos = torch.from_numpy(np.concatenate([e["positions"] for e in eng.trace_log], 1))[:, None].to(eng.device)
        rec_ms = []
        for _ in range(2):
            sync(eng.device)
            t = time.perf_counter()
            o = eng.lm(inputs_embeds=embeds, position_ids=pos, output_hidden_states=True)
            eng.head.from_hidden_states(o.hidden_states, -1)
            sync(eng.device)
            rec_ms.append((time.perf_counter() - t) * 1e3)
            del o
        sm, rm = statistics.median(stream_ms), min(rec_ms)
        out["recompute"] = {"units": n, "sequence_tokens": int(embeds.shape[1]), "streaming_lm_ms": round(sm, 3),
                            "full_recompute_lm_ms": round(rm, 1), "ratio_lm": round(rm / sm, 1),
                            "ratio_with_encoder": round((rm + enc_med) / (sm + enc_med), 1)}
        del eng

    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)  # the dev machine is shared: context for timings
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if str(args.device).startswith("cuda"):
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    p = out["stream"]["points"]
    steady = [str(q) for q in points if full_at is not None and q - half > full_at]  # full context
    steady_ok = None
    if len(steady) >= 2:
        steady_ok = abs(p[steady[-1]]["unit_cost_ms"] / p[steady[0]]["unit_cost_ms"] - 1) <= 0.10
    out["targets"] = {
        "unit10000_within_10pct_of_unit10": (abs(p[str(points[-1])]["ratio_to_first"] - 1) <= 0.10),
        # both points with a full context: a bounded runtime must not grow along the stream
        "steady_last_within_10pct_of_first_full_point": steady_ok,
        "rss_last_within_5pct_of_second": (len(points) < 3 or abs(p[str(points[-1])]["rss_mib"]
                                                                  / p[str(points[1])]["rss_mib"] - 1) <= 0.05),
        "recompute_ratio_ge_50": (out.get("recompute", {}).get("ratio_lm", 0) >= 50),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
