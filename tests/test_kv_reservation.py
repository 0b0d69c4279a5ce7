"""BoundedKVCache.append returns a reservation that carries everything its forward needs: the
slots to write (contiguous or not), the attended range, the mask; writing through one
reservation touches its slots only, whatever was reserved after it."""
from __future__ import annotations

import numpy as np
import torch

from roma_ros.engine.kv_cache import BoundedKVCache
from roma_ros.engine.positions import text_positions

L, H, D = 2, 2, 4


def cache(capacity: int = 12) -> BoundedKVCache:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    return BoundedKVCache(L, H, D, capacity, inv_freq, position_limit=10_000)


def new(n: int, value: float) -> torch.Tensor:
    return torch.full((L, 1, H, n, D), value)


def test_each_reservation_writes_its_own_slots():
    kv = cache()
    gid = kv.new_group("unit")
    first = kv.append(text_positions(0, 3)[0], gid)
    second = kv.append(text_positions(3, 2)[0], gid)
    assert first.slots == slice(0, 3) and second.slots == slice(3, 5)
    assert (first.hi, second.hi) == (3, 5)
    kv.write_new(second, new(2, 2.0), new(2, -2.0))
    kv.write_new(first, new(3, 1.0), new(3, -1.0))  # an older reservation still knows its slots
    assert torch.equal(kv.k[0, 0, 0, :5, 0], torch.tensor([1.0, 1, 1, 2, 2]))
    assert torch.equal(kv.v[0, 0, 0, :5, 0], torch.tensor([-1.0, -1, -1, -2, -2]))
    assert torch.count_nonzero(kv.k[:, :, :, 5:]) == 0


def test_after_an_eviction_the_slots_are_an_index_and_the_mask_hides_them_from_the_past():
    kv = cache(capacity=6)
    old = kv.new_group("unit")
    kv.append(text_positions(0, 2)[0], old)
    keep = kv.new_group("unit")
    kv.append(text_positions(2, 3)[0], keep)
    kv.write_new(kv.writing, new(3, 5.0), new(3, 5.0))
    kv.drop_group(old)  # frees slots 0-1, while 5 is still free: no contiguous run of 3
    later = kv.new_group("unit")
    reservation = kv.append(text_positions(5, 3)[0], later)
    assert isinstance(reservation.slots, torch.Tensor)
    assert reservation.slots.tolist() == [0, 1, 5] and reservation.hi == 6
    kv.write_new(reservation, new(3, 7.0), new(3, 7.0))
    assert kv.k[0, 0, 0, :, 0].tolist() == [7.0, 7.0, 5.0, 5.0, 5.0, 7.0]
    _, _, mask = kv.explicit_inputs(reservation)
    past = mask[0, 0, :, : reservation.hi]
    assert torch.all(past[:, [0, 1, 5]] == torch.finfo(mask.dtype).min)  # stale before the write
    assert torch.all(past[:, 2:5] == 0)
    assert np.array_equal(reservation.positions[0], [5, 6, 7])
