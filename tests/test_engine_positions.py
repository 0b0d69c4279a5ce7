"""Chunked TMRoPE: our per-unit positions against docs/model.md section 3 and transformers' get_rope_index."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_fixtures import REAL_HW, SPECIAL_IDS, make_units, tiny_engine, tiny_thinker
from roma_ros.engine.positions import AEOS, ABOS, AUDIO, VBOS, VEOS, VIDEO, UnitLayout, text_positions, unit_positions


def test_spec_worked_example_advances_27_per_unit():
    # 336x168 frame -> 24x12 patches -> 12x6 merged = 72 video tokens; 25 audio tokens
    lay = UnitLayout(1, 12, 24, 25)
    assert lay.n_video == 72 and lay.n_tokens == 101
    pos, kinds, new_max = unit_positions(100, lay)
    assert list(kinds[:2]) == [VBOS, ABOS] and list(kinds[-2:]) == [AEOS, VEOS]
    assert (pos[:, :2] == 100).all()  # both bos share the base id
    v = pos[:, kinds == VIDEO]
    assert (v[0] == 101).all()  # one time id for the unit's video
    assert v[1].min() == 101 and v[1].max() == 101 + 5 and v[2].max() == 101 + 11
    a = pos[:, kinds == AUDIO]
    assert (a[0] == a[1]).all() and (a[1] == a[2]).all()
    assert list(a[0]) == list(range(101, 126))  # one id per 40 ms
    assert (pos[:, -2:] == 126).all() and new_max == 126  # eos follow
    pos2, _, m2 = unit_positions(new_max + 1, lay)
    assert m2 - new_max == 27  # the paper's worked example
    tp, tm = text_positions(m2 + 1, 3)
    assert (tp == np.arange(m2 + 1, m2 + 4)).all() and tm == m2 + 3


def _hf_rope(thinker, ids, grids, n_audio_frames):
    input_ids = torch.tensor(ids)[None]
    return thinker.model.get_rope_index(
        input_ids, None, torch.tensor(grids), torch.ones_like(input_ids), True,
        torch.tensor(n_audio_frames), torch.ones(len(grids)))[0][:, 0].numpy()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(1, 8), st.sampled_from([50, 100, 200, 400]),
                          st.integers(0, 3)), min_size=1, max_size=3), st.integers(0, 5))
def test_matches_get_rope_index(units, prefix_len):
    """Any sequence text / unit / text ... : streaming positions == HF's whole-sequence get_rope_index."""
    thinker = _THINKER
    ids, pos_parts, grids, frames = [1] * prefix_len, [], [], []
    running = None
    if prefix_len:
        p, running = text_positions(0, prefix_len)
        pos_parts.append(p)
    for gt, mh, mw, n_frames, n_text in units:
        n_audio = ((n_frames - 1) // 2 + 1 - 2) // 2 + 1
        lay = UnitLayout(gt, 2 * mh, 2 * mw, n_audio)
        p, kinds, running = unit_positions(0 if running is None else running + 1, lay)
        tok = np.array([SPECIAL_IDS[t] for t in ["<|vision_bos|>", "<|audio_bos|>", "<|VIDEO|>", "<|AUDIO|>",
                                                  "<|audio_eos|>", "<|vision_eos|>"]])
        ids += list(tok[kinds])
        pos_parts.append(p)
        grids.append([gt, 2 * mh, 2 * mw])
        frames.append(n_frames)
        if n_text:
            p, running = text_positions(running + 1, n_text)
            pos_parts.append(p)
            ids += [2] * n_text
    ours = np.concatenate(pos_parts, axis=1)
    ref = _hf_rope(thinker, ids, grids, frames)
    assert (ours == ref).all()


_THINKER = tiny_thinker(0)


def test_engine_stream_positions_match_get_rope_index():
    """The positions the engine actually used (prefix, units, query, answer) == get_rope_index."""
    eng = tiny_engine(trace=True, thinker=_THINKER, max_answer_tokens=8, segment_tokens=5)
    units = make_units(4, seed=3) + make_units(1, seed=4, hw=REAL_HW)
    eng.ingest(units[0])
    eng.ask("what is this?", "q1")
    for u in units[1:4]:
        eng.ingest(u)  # unit 1: answer forced (segment 1), unit 2: continues, ...
    eng.ingest(units[4])
    ids, pos, grids = [], [], []
    for e in eng.trace_log:
        ids += [int(i) for i in e["token_ids"]]
        pos.append(e["positions"])
        if e["kind"] == "unit":
            grids.append(list(e["grid"]))
    ref = _hf_rope(eng.thinker, ids, grids, [100] * len(grids))
    assert (np.concatenate(pos, axis=1) == ref).all()
    kinds = [e["kind"] for e in eng.trace_log]
    assert kinds[:2] == ["prefix", "unit"] and "query" in kinds and "answer" in kinds
