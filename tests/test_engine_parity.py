"""Streaming (one unit at a time, persistent cache) == one full-sequence forward, fp32, <= 1e-4.

Also settles the hidden-state convention of the speak head (docs/model.md section 4) and checks the
preprocessing (log-mel, patchify) against transformers' own processors.
"""
import numpy as np
import pytest
import torch

from engine_fixtures import REAL_HW, make_units, tiny_engine, tiny_thinker
from roma_ros.engine.speak_head import SpeakHead

TOL = 1e-4
N_UNITS = 6


@pytest.fixture(scope="module")
def streamed():
    eng = tiny_engine(trace=True)
    units = make_units(N_UNITS - 1, seed=11) + make_units(1, seed=12, hw=REAL_HW)
    probs = [eng.ingest(u).prob for u in units]
    return eng, probs, eng.next_token_logits()


def _full_sequence(eng):
    embeds = torch.cat([e["embeds"] for e in eng.trace_log], dim=1)
    pos = np.concatenate([e["positions"] for e in eng.trace_log], axis=1)
    ends, n = [], 0
    for e in eng.trace_log:
        n += e["embeds"].shape[1]
        if e["kind"] == "unit":
            ends.append(n - 1)
    ids = sum((list(map(int, e["token_ids"])) for e in eng.trace_log), [])
    return embeds, torch.from_numpy(pos)[:, None, :], ends, ids


def test_lm_parity_streaming_vs_full_forward(streamed):
    eng, probs, logits = streamed
    embeds, pos, ends, _ = _full_sequence(eng)
    with torch.no_grad():
        out = eng.thinker.model.language_model(inputs_embeds=embeds, position_ids=pos, output_hidden_states=True)
        ref_probs = eng.head.from_hidden_states(out.hidden_states, torch.tensor(ends))
        ref_logits = eng.thinker.lm_head(out.last_hidden_state[0, -1:])[0]
    d_prob = float((torch.tensor(probs) - ref_probs).abs().max())
    d_logit = float((logits - ref_logits).abs().max())
    print(f"\nLM parity: max|dp|={d_prob:.2e} max|dlogit|={d_logit:.2e}")
    assert d_prob <= TOL and d_logit <= TOL
    # the check is not vacuous: probabilities vary across units
    assert float(ref_probs.max() - ref_probs.min()) > 1e-3


def test_end_to_end_parity_against_hf_thinker_forward(streamed):
    """HF computes everything itself (towers, placeholder scatter, get_rope_index with
    use_audio_in_video): input_ids + pixel_values_videos + input_features."""
    eng, probs, logits = streamed
    _, _, ends, ids = _full_sequence(eng)
    units = [e for e in eng.trace_log if e["kind"] == "unit"]
    # units of different sizes: the HF forward takes one flat pixel tensor and a grid per video
    pixels = torch.cat([u["pixel_values"] for u in units])
    grids = torch.tensor([list(u["grid"]) for u in units])
    feats = torch.stack([u["input_features"] for u in units])
    input_ids = torch.tensor(ids)[None]
    with torch.no_grad():
        out = eng.thinker(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values_videos=pixels,
                          video_grid_thw=grids, input_features=feats,
                          feature_attention_mask=torch.ones(len(units), feats.shape[-1], dtype=torch.long),
                          use_audio_in_video=True, video_second_per_grid=torch.ones(len(units)),
                          output_hidden_states=True)
    ref_probs = eng.head.from_hidden_states(out.hidden_states, torch.tensor(ends))
    d_prob = float((torch.tensor(probs) - ref_probs).abs().max())
    d_logit = float((logits - out.logits[0, -1]).abs().max())
    print(f"\nthinker parity: max|dp|={d_prob:.2e} max|dlogit|={d_logit:.2e}")
    assert d_prob <= TOL and d_logit <= TOL


def test_hidden_state_convention(streamed):
    """hidden_states has L+1 entries; [-1] is AFTER the final norm (HF capture_outputs ties it to
    last_hidden_state). The streaming head uses exactly that tuple, so [-4:] = raw outputs of layers
    L-3..L-1 plus the normed final output. The alternative (raw last layer) gives different
    probabilities, so the parity tests above pin the convention down."""
    eng, probs, _ = streamed
    embeds, pos, ends, _ = _full_sequence(eng)
    raw = {}
    hook = eng.lm.layers[-1].register_forward_hook(lambda m, a, o: raw.setdefault("last", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            out = eng.thinker.model.language_model(inputs_embeds=embeds, position_ids=pos, output_hidden_states=True)
    finally:
        hook.remove()
    hs = out.hidden_states
    assert len(hs) == eng.thinker.config.text_config.num_hidden_layers + 1
    assert torch.equal(hs[0], embeds)
    assert torch.allclose(hs[-1], eng.lm.norm(raw["last"]), atol=1e-6)
    assert not torch.allclose(hs[-1], raw["last"], atol=1e-2)
    prenorm = hs[:-1] + (raw["last"],)
    alt = eng.head.from_hidden_states(prenorm, torch.tensor(ends))
    assert float((alt - torch.tensor(probs)).abs().max()) > 1e-3


def test_audio_features_equal_the_30s_reference():
    from transformers import WhisperFeatureExtractor

    eng = tiny_engine()
    rng = np.random.default_rng(0)
    # PCM in [-1, 1]: the encoder clips anything beyond full scale, the reference does not
    for audio in [np.clip(rng.standard_normal(16000) * 0.3, -1.0, 1.0).astype(np.float32),
                  np.concatenate([np.zeros(15000, np.float32), np.ones(1000, np.float32)]),  # loud at the end
                  (rng.standard_normal(9000) * 0.1).astype(np.float32)]:  # short unit: padded
        ours = eng.encoder.audio_features(audio)
        ref = WhisperFeatureExtractor(feature_size=128)(
            np.pad(audio, (0, max(0, 16000 - len(audio)))), sampling_rate=16000, padding="max_length",
            return_attention_mask=True, return_tensors="np")
        n = int(ref["attention_mask"].sum())
        assert n == 100 and ours.shape == (128, 100)
        assert np.abs(ours - ref["input_features"][0, :, :n]).max() == 0.0


def test_patchify_matches_the_pil_processor_and_video_layout():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    eng = tiny_engine()
    rng = np.random.default_rng(1)
    f1 = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    f2 = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessorPil()
    ref = proc(images=[f1], do_resize=False, return_tensors="np")
    ours, grid = eng.encoder.patchify([f1, f1])  # a repeated frame == the image path
    assert grid == (1, 4, 6) and tuple(ref["image_grid_thw"][0]) == (1, 4, 6)
    assert np.abs(ours.numpy() - ref["pixel_values"]).max() < 1e-5
    # two distinct frames: the video processor's layout (channel, temporal, patch, patch) per row
    ours2, _ = eng.encoder.patchify([f1, f2])
    n1 = proc(images=[f1], do_resize=False, return_tensors="np")["pixel_values"].reshape(-1, 3, 2, 14, 14)
    n2 = proc(images=[f2], do_resize=False, return_tensors="np")["pixel_values"].reshape(-1, 3, 2, 14, 14)
    expect = np.concatenate([n1[:, :, :1], n2[:, :, 1:]], axis=2).reshape(len(n1), -1)
    assert np.abs(ours2.numpy() - expect).max() < 1e-5


def test_bf16_runs_close_to_fp32():
    units = make_units(3, seed=5)
    p32 = [r.prob for r in map(tiny_engine().ingest, units)]
    thinker = tiny_thinker(0, dtype=torch.bfloat16)
    eng = tiny_engine(thinker=thinker, dtype="bfloat16")
    assert eng.cache.k.dtype == torch.bfloat16
    assert eng.lm.rotary_emb.inv_freq.dtype == torch.float32
    p16 = [eng.ingest(u).prob for u in units]
    assert np.abs(np.array(p32) - np.array(p16)).max() < 0.05


def test_linear_head_variant_mixes_last_four():
    h = SpeakHead(64, (-4, -3, -2, -1), "linear")
    states = torch.randn(4, 3, 64)
    w = torch.softmax(h.mixer_logits, 0)
    expect = torch.sigmoid(h.head((w[:, None, None] * states).sum(0)).squeeze(-1))
    assert torch.allclose(h(states), expect, atol=1e-6)
