"""Bounded context: eviction, rotary re-basing, positions in range, flat memory."""
import gc
import json
import os

import numpy as np
import pytest
import torch

from engine_fixtures import make_units, tiny_engine, tiny_head, tiny_thinker
from roma_ros.engine.kv_cache import ContextFullError
from roma_ros.engine.positions import text_positions


@pytest.fixture(scope="module")
def long_thinker():
    return tiny_thinker(0, max_positions=32768)


@pytest.fixture(scope="module")
def encodings(long_thinker):
    eng = tiny_engine(thinker=long_thinker)
    return [eng.encoder.encode(u) for u in make_units(40, seed=21)]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_rebase_rotation_equals_shifted_positions(long_thinker):
    """RoPE attention is invariant to a uniform shift of all positions, so the cache of a sequence
    at positions P, rotated by -d, must equal the cache of the same sequence at P - d (every layer)."""
    enc = tiny_engine(thinker=long_thinker).encoder.encode(make_units(1, seed=3)[0])
    embeds = enc.embeds
    from roma_ros.engine.positions import unit_positions

    pos_a, _, _ = unit_positions(5000, enc.layout)
    d = 4321
    caches = []
    for pos in (pos_a, pos_a - d):
        eng = tiny_engine(thinker=long_thinker, max_context_tokens=256)
        eng.cache.clear()
        gid = eng.cache.new_group("unit")
        eng._forward(embeds, pos, gid, "unit")
        caches.append(eng.cache)
    a, b = caches
    n = embeds.shape[1]
    a.rotate(np.arange(n), np.full(n, d))
    assert float((a.k[:, :, :, :n] - b.k[:, :, :, :n]).abs().max()) < 1e-4
    assert float((a.v[:, :, :, :n] - b.v[:, :, :, :n]).abs().max()) < 1e-4  # values carry no position


def test_full_path_with_eviction_keeps_positions_in_range_and_pins_the_prefix(long_thinker):
    limit = 700
    eng = tiny_engine(thinker=long_thinker, trace=True, max_context_tokens=400, position_limit=limit)
    eng.set_instructions(["Alert me when a dog barks."])
    pinned = eng.cache.pinned_tokens()
    results = [eng.ingest(u) for u in make_units(90, seed=5)]  # full path: towers + LM
    s = eng.cache.stats()
    assert s["rebases"] >= 2 and s["evicted_total"] > 0
    assert all(r.context_tokens <= 400 for r in results)
    assert max(int(e["positions"].max()) for e in eng.trace_log) <= limit < eng.max_position_embeddings
    assert eng.cache.pinned_tokens() == pinned  # prefix + instruction never evicted
    assert {"prefix", "instruction", "unit"} == set(s["tokens_by_kind"])
    # the kept units are the most recent ones
    kept_units = sorted(g.first_order for g in eng.cache.groups.values() if g.kind == "unit")
    unit_orders = [e["order"] for e in eng.trace_log if e["kind"] == "unit"]
    assert kept_units == unit_orders[-len(kept_units):]
    # positions of the kept content are contiguous after the last re-base (no gaps beyond evictions since)
    items = sorted((it for g in eng.cache.groups.values() for it in g.items), key=lambda it: it.order)
    assert items[0].pos_min == 0
    # answers and queries are evictable too once finished
    eng.logits_processor = lambda logits, gen: torch.full_like(logits, -1e9).index_fill_(
        0, torch.tensor([258]), 0.0) if len(gen) == 2 else logits
    eng.ask("hi?", "q")
    for u in make_units(30, seed=6):
        eng.ingest(u)
    assert "query" not in eng.cache.stats()["tokens_by_kind"]


def test_eviction_stays_close_to_no_eviction(long_thinker, encodings):
    """A long stream: probabilities with a bounded context vs the unbounded reference."""
    n_units = 400
    ref = tiny_engine(thinker=long_thinker, max_context_tokens=20000)
    bounded = tiny_engine(thinker=long_thinker, max_context_tokens=1024, position_limit=4095)
    p_ref, p_b = [], []
    for i in range(n_units):
        enc = encodings[i % len(encodings)]
        p_ref.append(ref.ingest_encoded(enc, i).prob)
        p_b.append(bounded.ingest_encoded(enc, i).prob)
    s = bounded.cache.stats()
    assert s["evicted_total"] > 0 and s["rebases"] >= 1 and ref.cache.stats()["evicted_total"] == 0
    assert ref.cache.max_pos > 4095 >= bounded.cache.max_pos
    d = np.abs(np.array(p_ref) - np.array(p_b))
    after = d[30:]  # once eviction started
    report = {"units": n_units, "max_context_tokens": 1024, "position_limit": 4095,
              "rebases": s["rebases"], "evicted_tokens": s["evicted_total"],
              "max_abs_diff": float(after.max()), "mean_abs_diff": float(after.mean()),
              "prob_std_reference": float(np.std(p_ref))}
    print("\neviction vs no eviction:", json.dumps(report))
    out = os.environ.get("ROMA_EVICTION_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(report, f)
    assert float(d[:25].max()) < 1e-5  # identical before the first eviction
    assert report["mean_abs_diff"] < 0.02 and report["max_abs_diff"] < 0.1


def test_memory_flat_over_5000_units(long_thinker, encodings):
    eng = tiny_engine(thinker=long_thinker, max_context_tokens=512, position_limit=2047)
    tensor_bytes = eng.cache.tensor_bytes()
    rss = {}
    n_groups = []
    for i in range(5000):
        eng.ingest_encoded(encodings[i % len(encodings)], i)
        if i in (999, 4999):
            gc.collect()
            rss[i] = rss_mb()
        if i % 500 == 0:
            n_groups.append(len(eng.cache.groups))
    s = eng.cache.stats()
    print(f"\nmemory: rss@1000={rss[999]:.1f} MB rss@5000={rss[4999]:.1f} MB cache={tensor_bytes / 2**20:.2f} MB "
          f"rebases={s['rebases']} max_pos={s['max_pos']}")
    assert eng.cache.tensor_bytes() == tensor_bytes and s["used"] <= 512 and s["hi"] <= 512
    assert max(n_groups) <= 512 // 37 + 2
    assert s["max_pos"] <= 2047
    assert rss[4999] - rss[999] < 16.0


def test_context_too_small_is_a_clear_error(long_thinker):
    eng = tiny_engine(thinker=long_thinker, max_context_tokens=64)
    with pytest.raises(ValueError, match="at most 32 .half of max_context_tokens"):
        eng.set_instructions(["x" * 80])
    assert "instruction" not in eng.cache.stats()["tokens_by_kind"]  # refused before anything changed
