"""A bounded, preallocated KV cache with group eviction and rotary re-basing (gpt-fast style).

Why not DynamicCache: it concatenates on every step (a full copy of the cache per unit) and can only
grow or be cropped at the end. ROMA streams for hours: we need to drop the OLDEST content while
keeping the system prompt and the standing instructions, in constant memory.

Design
- Slots. Keys/values live in two preallocated tensors (layers, 1, kv_heads, capacity, head_dim);
  capacity = `max_context_tokens`. Every cached token owns one slot. Attention runs over slots
  [0, hi) (hi = high-water mark, reaches capacity once the stream is long) with an explicit boolean
  mask built from each slot's *sequence order* (a global counter): query q may attend slot s iff
  order[s] != -1 (occupied) and order[s] <= order[q]. Attention is a set operation over keys, so
  slot placement is irrelevant; the mask alone encodes causality. Evicting is therefore free: the
  slots are marked empty (order = -1) and reused, nothing is copied.
- Groups. Content is appended in items (a unit, a text insertion, one decoded token ...) that belong
  to groups: the prefix and each standing instruction (pinned, never evicted), each unit, each
  response (query text + answer segments + markers). When a new item does not fit, whole groups
  are evicted oldest-first (by their first token), skipping pinned groups and groups still in
  progress (an unfinished answer, a query waiting for its answer).
- Positions and re-basing. Keys are cached AFTER rotary embedding. ROMA's 3-D rotary (mrope) uses
  a different position axis per frequency band, but re-basing shifts the time, height and width
  ids of a token by the SAME delta, so every frequency i rotates by -delta * inv_freq[i]
  regardless of its band: re-basing is a plain per-frequency 2-D rotation of the cached keys
  (values are position-free). Rotations compose exactly, so a re-based key equals the key computed
  at the new position up to rounding (checked in tests/test_engine_eviction.py).
  Re-basing is lazy: evicting leaves a gap in the positions (the kept content keeps exactly the
  relative distances it had in the full stream, the most faithful choice), and only when the
  running maximum would pass `position_limit` are all gaps closed at once: every kept item moves
  down so that it starts right after its predecessor. Afterwards the POSITIONS are contiguous,
  exactly those the kept content would have had if the evicted groups had never existed. The
  keys and values are not: each was computed while the evicted tokens were still in context, so
  it still carries what it attended to then (only its rotary phase is changed). Each key is rotated
  only at these rare events (once per ~(position_limit - span)/27 units), which keeps rounding in
  bf16 negligible. Positions therefore never exceed `position_limit` (< max_position_embeddings).

The HF attention layers call `update(key, value, layer_idx)`; everything else is bookkeeping done
by `append()` before each forward. The mask is handed to the HF text model as
`attention_mask={"full_attention": mask}`, which transformers uses as-is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class Item:
    order: int  # sequence order of its first token
    slots: np.ndarray  # (n,) slot indices
    pos_min: int
    pos_max: int  # position of the item's LAST token: the next item starts after it
    group: int


@dataclass
class Group:
    gid: int
    kind: str
    pinned: bool = False
    active: bool = False  # in progress: not evictable
    items: list[Item] = field(default_factory=list)

    @property
    def first_order(self) -> int:
        return self.items[0].order if self.items else 1 << 62

    @property
    def n_tokens(self) -> int:
        return sum(len(i.slots) for i in self.items)


@dataclass
class AppendInfo:
    """A reservation: what `append()` prepared for the one forward that follows it."""

    position_ids: torch.Tensor  # (3, 1, n) on the cache device, after any re-basing
    attention_mask: dict  # {"full_attention": (1, 1, n, hi) additive float mask}
    evicted_tokens: int
    rebased: bool
    positions: np.ndarray  # (3, n) int64
    slots: slice | torch.Tensor  # where the n new keys/values go: a slice when contiguous
    hi: int  # slots [0, hi) are the ones the forward attends over

    def write(self, buffer: torch.Tensor, dim: int, new: torch.Tensor) -> None:
        """Store `new` (n entries along `dim`) in this reservation's slots of `buffer`."""
        if isinstance(self.slots, slice):
            buffer.narrow(dim, self.slots.start, self.slots.stop - self.slots.start).copy_(new)
        else:
            buffer.index_copy_(dim, self.slots, new)


class ContextFullError(RuntimeError):
    pass


class _SlotLayer(CacheLayerMixin):
    is_compileable = False
    is_sliding = False

    def __init__(self, owner: "BoundedKVCache", idx: int):
        super().__init__()
        self.owner = owner
        self.idx = idx
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states):  # preallocated
        pass

    @property
    def keys(self):
        return self.owner.k[self.idx]

    @keys.setter
    def keys(self, v):  # CacheLayerMixin.__init__ assigns None
        pass

    @property
    def values(self):
        return self.owner.v[self.idx]

    @values.setter
    def values(self, v):
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        o = self.owner
        kb, vb = o.k[self.idx], o.v[self.idx]
        reservation = o.writing
        reservation.write(kb, 2, key_states)
        reservation.write(vb, 2, value_states)
        return kb[:, :, : reservation.hi], vb[:, :, : reservation.hi]

    def get_mask_sizes(self, query_length: int):
        return self.owner.hi, 0

    def get_seq_length(self) -> int:
        return self.owner.used

    def get_max_length(self) -> int:
        return self.owner.capacity

    def reset(self):
        pass


class BoundedKVCache(Cache):
    """Preallocated slots for `capacity` tokens, pinned/evictable groups, lazy rotary re-basing."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int,
                 inv_freq: torch.Tensor, position_limit: int, dtype=torch.float32, device="cpu"):
        super().__init__(layers=[_SlotLayer(self, i) for i in range(num_layers)])
        self.capacity = int(capacity)
        self.position_limit = int(position_limit)
        self.device = torch.device(device)
        self.dtype = dtype
        shape = (num_layers, 1, num_kv_heads, self.capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=dtype, device=self.device)
        self.inv_freq = inv_freq.detach().to(self.device, torch.float32)
        self.head_dim = head_dim
        self.clear()

    # ---- bookkeeping ----------------------------------------------------------------------
    def clear(self):
        self.order = np.full(self.capacity, -1, np.int64)
        self.order_dev = torch.full((self.capacity,), -1, dtype=torch.long, device=self.device)
        self.free_mask = np.ones(self.capacity, bool)
        self.groups: dict[int, Group] = {}
        self.hi = 0
        self.used = 0
        self.counter = 0
        self.max_pos: int | None = None
        self.evicted_total = 0
        self.rebase_count = 0
        # The reservation of the forward in progress: transformers calls Cache.update per layer
        # without one, so the torch path reads it here (explicit-I/O backends pass it along).
        self.writing: AppendInfo | None = None
        self._next_gid = 0

    def new_group(self, kind: str, pinned: bool = False, active: bool = False) -> int:
        gid = self._next_gid
        self._next_gid += 1
        self.groups[gid] = Group(gid, kind, pinned, active)
        return gid

    def set_active(self, gid: int, active: bool):
        if gid in self.groups:
            self.groups[gid].active = active

    def drop_group(self, gid: int) -> int:
        g = self.groups.pop(gid, None)
        if g is None:
            return 0
        n = 0
        for it in g.items:
            self.order[it.slots] = -1
            self.free_mask[it.slots] = True
            n += len(it.slots)
        if n:
            idx = torch.from_numpy(np.concatenate([it.slots for it in g.items])).to(self.device)
            self.order_dev.index_fill_(0, idx, -1)
        self.used -= n
        return n

    def is_finite(self) -> bool:
        """True when every held key and value is finite (free slots may hold anything)."""
        held = torch.from_numpy(np.flatnonzero(~self.free_mask)).to(self.device)
        if held.numel() == 0:
            return True
        return bool(torch.isfinite(self.k.index_select(3, held)).all()
                    and torch.isfinite(self.v.index_select(3, held)).all())

    @property
    def next_start(self) -> int:
        return 0 if self.max_pos is None else self.max_pos + 1

    def tensor_bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def pinned_tokens(self) -> int:
        return sum(g.n_tokens for g in self.groups.values() if g.pinned)

    # ---- eviction and re-basing --------------------------------------------------------------
    def _evict_for(self, n: int) -> int:
        if n > self.capacity:
            raise ContextFullError(f"an item of {n} tokens exceeds max_context_tokens={self.capacity}")
        freed = 0
        if self.capacity - self.used >= n:
            return 0
        candidates = sorted((g for g in self.groups.values() if not g.pinned and not g.active),
                            key=lambda g: g.first_order)
        for g in candidates:
            if self.capacity - self.used >= n:
                break
            freed += self.drop_group(g.gid)
        if self.capacity - self.used < n:
            raise ContextFullError(
                f"context full: {self.used} tokens are pinned or in progress, {n} more needed, "
                f"max_context_tokens={self.capacity}; raise max_context_tokens or shorten instructions"
            )
        self.evicted_total += freed
        return freed

    def rebase(self) -> int:
        """Close all position gaps left by evicted groups; returns how far the maximum moved down."""
        items = sorted((it for g in self.groups.values() for it in g.items), key=lambda it: it.order)
        if not items:
            old = self.max_pos
            self.max_pos = None
            return 0 if old is None else old + 1
        slot_delta = np.zeros(self.capacity, np.int64)
        prev_max = None
        for it in items:
            new_min = 0 if prev_max is None else prev_max + 1
            delta = it.pos_min - new_min
            if delta:
                slot_delta[it.slots] = delta
                it.pos_min -= delta
                it.pos_max -= delta
            prev_max = it.pos_max
        moved = self.max_pos - prev_max
        self.max_pos = prev_max
        slots = np.nonzero(slot_delta)[0]
        if len(slots):
            self.rotate(slots, slot_delta[slots])
        self.rebase_count += 1
        return moved

    @torch.no_grad()
    def rotate(self, slots: np.ndarray, deltas: np.ndarray):
        """Move cached keys in `slots` from position p to p - delta (all three mrope axes)."""
        idx = torch.from_numpy(slots).to(self.device)
        d = torch.from_numpy(deltas.astype(np.float64)).to(self.device)
        ang = (-d[:, None] * self.inv_freq.double()[None, :]).float()  # (n, D/2)
        cos, sin = torch.cos(ang), torch.sin(ang)
        cos = torch.cat([cos, cos], -1)
        sin = torch.cat([sin, sin], -1)
        k = self.k.index_select(3, idx).float()  # (L, 1, H, n, D)
        half = k.shape[-1] // 2
        rot = torch.cat([-k[..., half:], k[..., :half]], -1)
        k = k * cos + rot * sin
        self.k.index_copy_(3, idx, k.to(self.dtype))

    # ---- appending ------------------------------------------------------------------------
    def append(self, positions: np.ndarray, gid: int) -> AppendInfo:
        """Reserve slots for n new tokens of group `gid` at `positions` (3, n), computed from
        `next_start`. Evicts and re-bases as needed (the returned positions are the ones to use),
        and returns the reservation (mask, positions, slots) for the forward that follows."""
        n = positions.shape[1]
        evicted = self._evict_for(n)
        rebased = False
        if int(positions.max()) > self.position_limit:
            old_start = self.next_start
            self.rebase()
            shift = old_start - self.next_start
            positions = positions - shift
            rebased = True
            if int(positions.max()) > self.position_limit:
                raise ContextFullError(
                    f"positions still reach {int(positions.max())} > position_limit={self.position_limit} after "
                    "re-basing: the kept context spans too many positions (lower max_context_tokens)"
                )
        free = np.flatnonzero(self.free_mask)[:n]
        orders = np.arange(self.counter, self.counter + n, dtype=np.int64)
        self.counter += n
        self.order[free] = orders
        self.free_mask[free] = False
        self.used += n
        self.hi = max(self.hi, int(free[-1]) + 1)
        g = self.groups[gid]
        g.items.append(Item(int(orders[0]), free, int(positions.min()), int(positions[:, -1].max()), gid))
        pm = int(positions[:, -1].max())
        self.max_pos = pm if self.max_pos is None else max(self.max_pos, pm)
        if free[-1] - free[0] + 1 == n:
            slots: slice | torch.Tensor = slice(int(free[0]), int(free[-1]) + 1)
            self.order_dev[slots] = torch.arange(int(orders[0]), int(orders[0]) + n, device=self.device)
        else:
            slots = torch.from_numpy(free).to(self.device)
            self.order_dev.index_copy_(0, slots, torch.from_numpy(orders).to(self.device))
        q = torch.arange(int(orders[0]), int(orders[0]) + n, device=self.device)
        ko = self.order_dev[: self.hi]
        allowed = (ko[None, :] >= 0) & (ko[None, :] <= q[:, None])
        # additive float mask, built once per forward (a bool mask is converted by SDPA in every layer)
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        pos_t = torch.from_numpy(np.ascontiguousarray(positions)).to(self.device).view(3, 1, n)
        self.writing = AppendInfo(pos_t, {"full_attention": mask[None, None]}, evicted, rebased, positions,
                                  slots, self.hi)
        return self.writing

    # ---- explicit-I/O backends (ONNX Runtime, TensorRT) ----------------------------------------
    def explicit_inputs(self, info: AppendInfo) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """For a graph that attends over [past, new] (onnx_export.LMStepGraph): the cached slots
        [0, hi) of each layer and KV head, layer-major, as (hi, head_dim) views of the cache
        buffers (contiguous, not copies: a runtime can bind them as they are), and the
        (1, 1, n, hi + n) mask. The slots `append()` just reserved hold stale data, so the past
        part hides them; the new tokens see each other causally in the appended part."""
        mask = info.attention_mask["full_attention"]
        n = mask.shape[2]
        lowest = torch.finfo(mask.dtype).min
        past = mask.clone()
        past[..., info.slots] = lowest
        causal = torch.full((n, n), lowest, dtype=mask.dtype, device=mask.device).triu_(1)
        full = torch.cat([past, causal[None, None]], -1)
        layers, _, heads = self.k.shape[:3]
        cells = [(layer, head) for layer in range(layers) for head in range(heads)]
        keys = [self.k[layer, 0, head, : info.hi] for layer, head in cells]
        values = [self.v[layer, 0, head, : info.hi] for layer, head in cells]
        return keys, values, full

    @torch.no_grad()
    def write_new(self, info: AppendInfo, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store the new tokens' keys/values (L, 1, kv_heads, n, head_dim) in `info`'s slots."""
        info.write(self.k, 3, keys.to(self.device, self.dtype))
        info.write(self.v, 3, values.to(self.device, self.dtype))

    # ---- Cache API used by transformers ----------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.used

    def get_max_length(self, layer_idx=None) -> int:
        return self.capacity

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0):
        return self.hi, 0

    @property
    def is_compileable(self) -> bool:
        return False

    def stats(self) -> dict:
        kinds: dict[str, int] = {}
        for g in self.groups.values():
            kinds[g.kind] = kinds.get(g.kind, 0) + g.n_tokens
        return {"used": self.used, "capacity": self.capacity, "hi": self.hi, "max_pos": self.max_pos,
                "evicted_total": self.evicted_total, "rebases": self.rebase_count, "groups": len(self.groups),
                "tokens_by_kind": kinds, "tensor_bytes": self.tensor_bytes()}
