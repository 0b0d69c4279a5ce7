"""Loading checkpoints in ROMA's layout (a tiny Qwen2.5-Omni written by the test) with upstream transformers."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine_fixtures import make_units, tiny_engine, tiny_head, tiny_thinker, write_checkpoint
from roma_ros.engine.checkpoint import CheckpointError, load_thinker, map_key
from roma_ros.engine.config import EngineConfig, PromptConfig
from roma_ros.engine.roma import RomaModel


def _outputs(eng, units):
    probs = [eng.ingest(u).prob for u in units]
    return np.array(probs), eng.next_token_logits()


@pytest.fixture(scope="module")
def writer():
    return tiny_thinker(7), tiny_head(8)


@pytest.mark.parametrize("shards", [1, 2])
def test_full_roma_checkpoint_reproduces_the_writer(tmp_path, writer, shards):
    thinker, head = writer
    path = write_checkpoint(tmp_path / "roma", thinker, head, full=True, legacy=True, shards=shards)
    units = make_units(3, seed=2)
    ref_p, ref_l = _outputs(tiny_engine(thinker=thinker, head=head), units)
    eng = RomaModel.load(EngineConfig(model_path=str(path)))
    assert not hasattr(eng.thinker, "talker") and type(eng.thinker).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert eng.head.variant == "mlp" and eng.head.layer_ids == [-4, -3, -2, -1]
    assert eng.prompt == PromptConfig.from_file(path / "roma_prompt.json")  # the prompt beside the checkpoint
    p, logits = _outputs(eng, units)
    assert np.abs(p - ref_p).max() == 0.0
    assert float((logits - ref_l).abs().max()) == 0.0
    # weights really came from the file: every parameter equals the writer's
    for (k, a), (_, b) in zip(sorted(thinker.state_dict().items()), sorted(eng.thinker.state_dict().items())):
        assert torch.equal(a, b), k


def test_thinker_only_checkpoint_new_layout_unprefixed_linear_head(tmp_path, writer):
    thinker, _ = writer
    head = tiny_head(3, variant="linear")
    path = write_checkpoint(tmp_path / "t", thinker, head, full=False, legacy=False, gate_prefix="")
    eng = RomaModel.load(EngineConfig(model_path=str(path)))
    assert eng.head.variant == "linear"
    units = make_units(2, seed=4)
    ref_p, _ = _outputs(tiny_engine(thinker=thinker, head=head), units)
    p, _ = _outputs(eng, units)
    assert np.abs(p - ref_p).max() == 0.0
    with pytest.raises(ValueError, match="variant 'mlp' needs"):
        RomaModel.load(EngineConfig(model_path=str(path), head_variant="mlp"))


def test_head_variant_selectable_when_both_ship(tmp_path, writer):
    thinker, head = writer
    path = write_checkpoint(tmp_path / "both", thinker, head)
    lin = tiny_head(5, variant="linear")
    from safetensors.torch import load_file

    sd = load_file(str(path / "model.safetensors"))
    sd.update(lin.roma_state_dict("thinker."))
    save_file(sd, str(path / "model.safetensors"))
    assert RomaModel.load(EngineConfig(model_path=str(path))).head.variant == "mlp"
    assert RomaModel.load(EngineConfig(model_path=str(path), head_variant="linear")).head.variant == "linear"


def test_checkpoint_without_speak_head_fails_clearly(tmp_path, writer):
    thinker, _ = writer
    path = write_checkpoint(tmp_path / "plain", thinker, None)
    with pytest.raises(CheckpointError, match="no ROMA speak head"):
        RomaModel.load(EngineConfig(model_path=str(path)))


def test_pickles_refused_and_bad_dirs_explained(tmp_path, writer):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni", "thinker_config": {}}))
    torch.save({"x": torch.zeros(1)}, tmp_path / "p" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused"):
        load_thinker(tmp_path / "p")
    (tmp_path / "q").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_thinker(tmp_path / "q")
    (tmp_path / "q" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not qwen2_5_omni"):
        load_thinker(tmp_path / "q")


def test_missing_weights_are_reported(tmp_path, writer):
    thinker, head = writer
    path = write_checkpoint(tmp_path / "m", thinker, head)
    from safetensors.torch import load_file

    sd = load_file(str(path / "model.safetensors"))
    del sd["thinker.model.layers.0.mlp.up_proj.weight"]
    save_file(sd, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        load_thinker(path)


def test_key_mapping():
    assert map_key("thinker.model.layers.3.self_attn.q_proj.weight") == ("model", "model.language_model.layers.3.self_attn.q_proj.weight")
    assert map_key("thinker.audio_tower.conv1.weight") == ("model", "model.audio_tower.conv1.weight")
    assert map_key("thinker.visual.merger.mlp.0.weight") == ("model", "model.visual.merger.mlp.0.weight")
    assert map_key("thinker.lm_head.weight") == ("model", "lm_head.weight")
    assert map_key("model.language_model.norm.weight") == ("model", "model.language_model.norm.weight")
    assert map_key("thinker.gate_mixer.logits") == ("gate", "gate_mixer.logits")
    assert map_key("gate_head.bias") == ("gate", "gate_head.bias")
    assert map_key("talker.model.embed_tokens.weight") is None
    assert map_key("token2wav.x") is None


def test_dtype_parameter(tmp_path, writer):
    thinker, head = writer
    path = write_checkpoint(tmp_path / "d", thinker, head)
    eng = RomaModel.load(EngineConfig(model_path=str(path), dtype="bfloat16"))
    assert eng.thinker.dtype == torch.bfloat16 and eng.cache.k.dtype == torch.bfloat16
    assert eng.head.fc1.weight.dtype == torch.float32
    r = eng.ingest(make_units(1)[0])
    assert 0.0 <= r.prob <= 1.0
