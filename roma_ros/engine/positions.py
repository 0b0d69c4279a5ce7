"""Chunked TMRoPE positions for ONE unit, offset by the running maximum (docs/model.md section 3).

This reproduces, for a single unit, what transformers' `get_rope_index(..., use_audio_in_video=True)`
computes for a whole sequence, so the streaming runtime never recomputes the past:

    <|vision_bos|> <|audio_bos|>   both at s  (s = running max + 1, or 0 for the first token)
    video tokens                    t = s+1 + t_index*second_per_grid*position_id_per_seconds,
                                    h = s+1 + row, w = s+1 + col (rows/cols of the merged grid)
    audio tokens                    s+1 + k on all three axes (one id per 40 ms)
    (video and audio interleaved per `seconds_per_chunk` chunk, video first, as HF does)
    <|audio_eos|> <|vision_eos|>    both at (max of the last chunk) + 1

transformers takes the eos id from the last chunk appended (the audio tokens), not from the whole
unit; we do the same. For ROMA's units the two agree (25 audio ids exceed any merged grid side a
65,536-pixel frame can have), so the eos is the unit's maximum; the next unit starts at eos + 1. With a 12x6 merged grid and
25 audio tokens this advances 27 per unit, the paper's worked example. Text tokens (prompt,
instructions, queries, answers) take equal ids on all three axes, continuing from the maximum.
tests/test_engine_positions.py checks this against `get_rope_index` on whole multi-unit sequences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# token kinds in a unit's layout
VBOS, ABOS, VIDEO, AUDIO, AEOS, VEOS = range(6)


@dataclass(frozen=True)
class UnitLayout:
    grid_t: int  # temporal patches (1 for 2 frames per unit)
    grid_h: int  # patch rows before the spatial merge
    grid_w: int  # patch columns before the spatial merge
    n_audio: int  # audio tokens (25 for one second)
    spatial_merge: int = 2
    second_per_grid: float = 1.0  # temporal_patch_size / fps
    position_id_per_seconds: int = 25
    seconds_per_chunk: float = 2

    @property
    def n_video(self) -> int:
        return self.grid_t * (self.grid_h // self.spatial_merge) * (self.grid_w // self.spatial_merge)

    @property
    def n_tokens(self) -> int:
        return self.n_video + self.n_audio + 4


def _chunks(values: np.ndarray, tokens_per_chunk: int, remove: int) -> list[tuple[int, int]]:
    """transformers' get_chunked_index: split a non-decreasing id list by value ranges."""
    out, start, chunk = [], 0, 1
    for i, v in enumerate(values):
        if v - remove >= chunk * tokens_per_chunk:
            out.append((start, i))
            start = i
            chunk += 1
    out.append((start, len(values)))
    return out


def unit_positions(start: int, layout: UnitLayout) -> tuple[np.ndarray, np.ndarray, int]:
    """Positions (3, n) int64, token kinds (n,), and the new running maximum for one unit.

    `start` is the id of the unit's bos tokens: previous maximum + 1 (0 at the very beginning).
    """
    s = int(start)
    m = layout.spatial_merge
    gh, gw = layout.grid_h // m, layout.grid_w // m
    st = s + 1
    audio = np.arange(layout.n_audio, dtype=np.int64) + st
    t_index = (np.arange(layout.grid_t) * layout.second_per_grid * layout.position_id_per_seconds).astype(np.int64)
    vt = np.repeat(t_index, gh * gw) + st
    vh = np.tile(np.repeat(np.arange(gh), gw), layout.grid_t) + st
    vw = np.tile(np.tile(np.arange(gw), gh), layout.grid_t) + st
    video = np.stack([vt, vh, vw]).astype(np.int64)
    per_chunk = int(layout.position_id_per_seconds * layout.seconds_per_chunk)
    v_chunks = _chunks(video[0], per_chunk, st)
    a_chunks = _chunks(audio, per_chunk, st)

    parts = [np.full((3, 2), s, dtype=np.int64)]
    kinds = [np.array([VBOS, ABOS], dtype=np.int8)]
    for j in range(max(len(v_chunks), len(a_chunks))):
        if j < len(v_chunks):
            a, b = v_chunks[j]
            parts.append(video[:, a:b])
            kinds.append(np.full(b - a, VIDEO, dtype=np.int8))
        if j < len(a_chunks):
            a, b = a_chunks[j]
            parts.append(np.broadcast_to(audio[a:b], (3, b - a)))
            kinds.append(np.full(b - a, AUDIO, dtype=np.int8))
    eos = int(parts[-1].max()) + 1  # transformers: max of the LAST chunk appended, + 1
    parts.append(np.full((3, 2), eos, dtype=np.int64))
    kinds.append(np.array([AEOS, VEOS], dtype=np.int8))
    return np.concatenate(parts, axis=1), np.concatenate(kinds), eos


def text_positions(start: int, n: int) -> tuple[np.ndarray, int]:
    """Positions (3, n) for n text tokens starting at `start`; returns them and the new maximum."""
    p = np.arange(start, start + n, dtype=np.int64)
    return np.broadcast_to(p, (3, n)).copy(), start + n - 1

