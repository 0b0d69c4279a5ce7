"""Grouped-query attention over the bounded KV cache without copying the cache.

Qwen2.5-Omni's text model has fewer key/value heads than query heads (7B: 28 query heads share
4 KV heads). Every streaming forward here carries an explicit additive mask (the bounded cache
reuses slots, so "causal" is not a prefix of the buffer), and with a mask transformers' SDPA path
expands the cached keys and values to all query heads (`repeat_kv`) in every layer of every
forward: at 8,192 cached tokens that copy costs more than the attention itself and grows with
the context. torch's `enable_gqa=True` avoids the copy on CPU but falls back to the slow math
kernel on CUDA when a mask is given.

Packing instead: the g query heads that share one KV head are stacked along the query axis, so
SDPA runs with kv_heads heads over g*n queries against the cache as it is, and the n mask rows
are repeated g times (the mask is shared by all heads). The dot products are the same ones, so
the result equals the unpacked attention up to summation order; every SDPA kernel and the
ONNX exporter accept it. Forwards without a mask (a full causal recompute) keep transformers'
own path, which needs no copy there.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_SDPA = "roma_packed_sdpa"


def _packed_mask(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """The mask with each row repeated `groups` times. One forward calls every layer with the same
    mask, so the expansion is made once and kept on the mask tensor itself: it lives exactly as
    long as the forward's mask, and concurrent forwards each have their own."""
    packed = getattr(mask, "_roma_packed", None)
    if packed is not None and packed.shape[2] == groups * mask.shape[2] and not torch.jit.is_tracing():
        return packed
    b, h, n, total = mask.shape
    packed = mask[:, :, None].expand(b, h, groups, n, total).reshape(b, h, -1, total)
    if not torch.jit.is_tracing():  # an exported graph must not hold a cached constant
        mask._roma_packed = packed
    return packed


def packed_gqa_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    **kwargs):
    """transformers attention-function signature: query (B, H, n, D), key/value (B, KV, S, D),
    an additive or boolean mask (B, 1, n, S); returns ((B, n, H, D), None)."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or attention_mask is None or attention_mask.shape[1] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    b, heads, n, d = query.shape
    kv_heads = key.shape[1]
    packed_q = query.reshape(b, kv_heads, -1, d)  # head h = kv * groups + j -> rows j*n .. j*n+n-1
    mask = _packed_mask(attention_mask, groups)
    out = torch.nn.functional.scaled_dot_product_attention(packed_q, key, value, attn_mask=mask,
                                                           dropout_p=dropout, scale=scaling)
    return out.reshape(b, heads, n, value.shape[-1]).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_SDPA, packed_gqa_sdpa)
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)  # unmasked calls get SDPA's own masks


def use_packed_gqa(text_model) -> None:
    """Route the text model's attention through `packed_gqa_sdpa` when it runs on SDPA (eager
    stays eager, for reference forwards). The vision and audio towers are left alone."""
    if text_model.config._attn_implementation == "sdpa":
        text_model.config._attn_implementation = PACKED_SDPA
