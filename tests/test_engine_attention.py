"""Packed grouped-query attention (engine/attention.py): exact, and the cache is never expanded."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_fixtures import make_units, tiny_engine
from roma_ros.engine.attention import PACKED_SDPA, packed_gqa_sdpa


class _Module:
    def __init__(self, groups):
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = False


def _reference(q, k, v, allowed, scale):
    """Textbook attention in float64 with every query head reading its KV head explicitly."""
    groups = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(groups, 1)
    v = v.double().repeat_interleave(groups, 1)
    scores = (q.double() @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


@settings(max_examples=40, deadline=None)
@given(kv_heads=st.integers(1, 3), groups=st.integers(1, 4), n=st.integers(1, 9), extra=st.integers(0, 40),
       boolean=st.booleans(), seed=st.integers(0, 2**16))
def test_packed_attention_equals_per_head_attention(kv_heads, groups, n, extra, boolean, seed):
    g = torch.Generator().manual_seed(seed)
    total, d = n + extra, 8
    q = torch.randn(1, n, kv_heads * groups, d, generator=g).transpose(1, 2)  # non-contiguous, as in HF
    k = torch.randn(1, kv_heads, total, d, generator=g)
    v = torch.randn(1, kv_heads, total, d, generator=g)
    allowed = torch.rand(n, total, generator=g) < 0.6  # holes anywhere, like freed cache slots
    allowed[torch.arange(n), torch.randint(0, total, (n,), generator=g)] = True  # every row sees a key
    allowed = allowed[None, None]
    mask = allowed if boolean else torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    out, _ = packed_gqa_sdpa(_Module(groups), q, k, v, mask, scaling=d ** -0.5)
    assert out.shape == (1, n, kv_heads * groups, d)
    ref = _reference(q, k, v, allowed, d ** -0.5)
    assert float((out.double() - ref).abs().max()) < 1e-5


def test_each_mask_gets_its_own_expansion():
    q = torch.randn(1, 4, 3, 8)
    k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    masks = []
    for seed in range(3):  # distinct masks in turn: each result must follow its own mask
        allowed = torch.rand(1, 1, 3, 10, generator=torch.Generator().manual_seed(seed)) < 0.5
        allowed[..., 0] = True
        masks.append(allowed)
    for allowed in masks + masks:
        out, _ = packed_gqa_sdpa(_Module(2), q, k, v, allowed, scaling=8 ** -0.5)
        assert float((out.double() - _reference(q, k, v, allowed, 8 ** -0.5)).abs().max()) < 1e-5


def test_streaming_forwards_attend_over_the_unexpanded_cache(monkeypatch):
    """Every masked forward of the streaming engine (units, prefix, answer tokens) hands SDPA the
    cache with its own KV-head count: no per-layer copy to query heads, at any context size."""
    eng = tiny_engine()
    tcfg = eng.thinker.config.text_config
    assert eng.lm.config._attn_implementation == PACKED_SDPA
    assert eng.thinker.config.vision_config._attn_implementation == "sdpa"  # towers untouched
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention
    cache_storage = eng.cache.k.untyped_storage().data_ptr()

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape[1], k.shape[1], k.untyped_storage().data_ptr() == cache_storage))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    for u in make_units(3, seed=4):
        eng.ingest(u)
    eng.respond()
    on_cache = [s for s in seen if s[2]]  # keys read straight from the cache's own memory
    assert len(on_cache) >= 4 * tcfg.num_hidden_layers  # 3 units + answer tokens, every layer
    assert all(s[:2] == (tcfg.num_key_value_heads, tcfg.num_key_value_heads) for s in on_cache)
    assert not [s for s in seen if s[1] == tcfg.num_attention_heads], "the cache was expanded to query heads"


def test_packed_engine_matches_the_stock_sdpa_engine():
    """The same stream through transformers' own SDPA attention (cache expanded per layer) gives
    the same speak probabilities and logits."""
    units = make_units(4, seed=9)
    packed = tiny_engine()
    stock = tiny_engine()
    stock.lm.config._attn_implementation = "sdpa"
    p1 = np.array([packed.ingest(u).prob for u in units])
    p2 = np.array([stock.ingest(u).prob for u in units])
    assert np.abs(p1 - p2).max() <= 1e-5
    assert float((packed.next_token_logits() - stock.next_token_logits()).abs().max()) <= 1e-4
    assert p1.max() - p1.min() > 1e-3  # not vacuous


@pytest.mark.parametrize("groups", [1, 3])
def test_unmasked_forwards_keep_the_causal_path(groups):
    q = torch.randn(1, 2 * groups, 5, 8)
    k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out, _ = packed_gqa_sdpa(_Module(groups), q, k, v, None, scaling=8 ** -0.5)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    assert float((out.double() - _reference(q, k, v, causal, 8 ** -0.5)).abs().max()) < 1e-5
