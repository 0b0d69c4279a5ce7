"""ONNX export and the ONNX Runtime backend: graphs, shapes, and parity with torch on a stream."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine_fixtures import SMALL_HW, make_units, tiny_head, tiny_thinker, write_checkpoint
from roma_ros.engine.config import EngineConfig
from roma_ros.engine.factory import load_model
from roma_ros.engine.onnx_export import MANIFEST, export_checkpoint
from roma_ros.engine.ort_runtime import OrtRuntime
from roma_ros.engine.roma import RomaModel

ROMA = str(Path(sys.prefix) / "bin" / "roma")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # max_positions 1024 with a 300-token context: the 60-unit stream evicts AND re-bases
    ckpt = write_checkpoint(tmp_path_factory.mktemp("onnx") / "tiny", tiny_thinker(0, max_positions=1024), tiny_head(1))
    result = export_checkpoint(ckpt, ckpt / "onnx", frame_sizes=[SMALL_HW])
    return ckpt, result


def test_export_writes_checked_graphs_with_dynamic_lm_shapes(exported):
    ckpt, result = exported
    manifest = json.loads((ckpt / "onnx" / MANIFEST).read_text())
    assert sorted(p.name for p in result.files) == sorted(
        ["embed.onnx", "audio.onnx", "lm_step.onnx", "speak_head.onnx", "vision_4x8.onnx"])
    for f in result.files:
        onnx.checker.check_model(str(f))
    lm = onnx.load(str(ckpt / "onnx" / "lm_step.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in lm.graph.input}
    assert dims["inputs_embeds"] == [1, "n", 64]
    cache_inputs = [name for name in dims if name.startswith("past_")]
    assert len(cache_inputs) == 2 * 4 * 2  # keys and values, one per layer and KV head
    assert all(dims[name] == ["past", 16] for name in cache_inputs)  # past slots x head dim
    assert dims["attention_mask"] == [1, 1, "n", "total"]
    assert [o.name for o in lm.graph.output] == ["logits", "head_states", "new_keys", "new_values"]
    assert manifest["layer_ids"] == [-4, -3, -2, -1] and manifest["audio_tokens"] == 25
    assert manifest["vision"]["4x8"]["frame_size"] == list(SMALL_HW)


def _stream(model, units):
    probs, tokens = [], []
    for i, unit in enumerate(units):
        if i % 12 == 4:
            model.ask("what do you see?", f"q{i}")
        result = model.ingest(unit)
        probs.append(result.prob)
        tokens += [t for c in result.chunks for t in c.token_ids]
    return np.array(probs), tokens


def test_onnxruntime_backend_streams_like_torch_over_60_units(exported):
    ckpt, _ = exported

    def config():
        return EngineConfig(model_path=str(ckpt), max_context_tokens=300, position_limit=900, segment_tokens=4,
                            max_answer_tokens=10)

    units = make_units(60, seed=11)
    ref = RomaModel.load(config())
    ort_model = load_model(config(), "onnxruntime")
    assert isinstance(ort_model.runtime, OrtRuntime)
    p_torch, t_torch = _stream(ref, units)
    p_ort, t_ort = _stream(ort_model, units)
    diff = float(np.abs(p_torch - p_ort).max())
    print(f"\nONNX Runtime vs torch over 60 units: max |dp| = {diff:.2e}, {len(t_torch)} greedy tokens")
    assert diff <= 1e-3
    assert len(t_torch) > 20 and t_ort == t_torch  # identical greedy answers
    for model in (ref, ort_model):  # the stream really evicted and re-based, on both backends alike
        stats = model.cache.stats()
        assert stats["evicted_total"] > 0 and stats["rebases"] >= 1
    assert ref.cache.stats() == ort_model.cache.stats()
    assert float(p_torch.max() - p_torch.min()) > 1e-3  # not a constant output


def test_a_frame_size_without_a_vision_graph_is_a_clear_error(exported):
    ckpt, _ = exported
    model = load_model(EngineConfig(model_path=str(ckpt)), "onnxruntime")
    with pytest.raises(ValueError, match="--frame-size 112x224"):
        model.ingest(make_units(1, seed=2, hw=(112, 224))[0])


def test_graphs_of_another_checkpoint_are_refused(exported, tmp_path):
    ckpt, _ = exported
    other = write_checkpoint(tmp_path / "other", tiny_thinker(3, max_positions=2048), tiny_head(4))
    with pytest.raises(ValueError, match="another checkpoint"):
        load_model(EngineConfig(model_path=str(other), export_dir=str(ckpt / "onnx")), "onnxruntime")
    with pytest.raises(FileNotFoundError, match="roma export"):
        load_model(EngineConfig(model_path=str(other)), "onnxruntime")
    with pytest.raises(ValueError, match="float32"):
        load_model(EngineConfig(model_path=str(ckpt), dtype="bfloat16"), "onnxruntime")


def test_roma_export_command_on_the_embedded_model(tmp_path):
    out = tmp_path / "export"
    result = subprocess.run([ROMA, "export", "-o", str(out), "--frame-size", "360x640"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["vision"] and all((out / g["file"]).is_file() for g in manifest["graphs"].values())
    assert "onnx.checker ok" in result.stdout
    bad = subprocess.run([ROMA, "export", "-o", str(out), "--frame-size", "big"], capture_output=True, text=True)
    assert bad.returncode != 0 and "HEIGHTxWIDTH" in bad.stderr


def test_worker_threads_sleep_between_runs_unless_asked_to_spin(exported):
    """A spinning ONNX Runtime pool per graph takes whole cores from the robot's other nodes
    between units (and slowed a torch model beside it 8x on 2 cores): off unless asked."""
    ckpt, _ = exported
    quiet = OrtRuntime.for_checkpoint(ckpt)
    busy = OrtRuntime.for_checkpoint(ckpt, spin=True)
    for runtime, want in ((quiet, "0"), (busy, "1")):
        for session in runtime._sessions.values():
            assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == want


def test_the_threads_setting_reaches_both_backends(exported):
    """`threads` sets torch's intra-op threads and each ONNX Runtime session's pool; 0 takes the
    automatic count (at most half the cores: the engine shares the robot's CPU)."""
    from roma_ros.engine.factory import auto_threads

    ckpt, _ = exported
    before = torch.get_num_threads()
    try:
        load_model(EngineConfig(model_path=str(ckpt), threads=2), "torch")
        assert torch.get_num_threads() == 2
        model = load_model(EngineConfig(model_path=str(ckpt), threads=1), "onnxruntime")
        assert torch.get_num_threads() == 1
        for session in model.runtime._sessions.values():
            assert session.get_session_options().intra_op_num_threads == 1
        load_model(EngineConfig(model_path=str(ckpt)), "torch")
        assert torch.get_num_threads() == auto_threads()
        with pytest.raises(ValueError, match="threads"):
            load_model(EngineConfig(model_path=str(ckpt), threads=-1), "torch")
    finally:
        torch.set_num_threads(before)
    assert [auto_threads(n) for n in (1, 2, 3, 4, 8, 16)] == [1, 1, 1, 2, 4, 4]


def test_a_speak_head_overlay_decides_on_onnx_runtime_as_on_torch(exported, tmp_path):
    """The overlay runs in torch on whatever runtime computed the layer states: both backends
    give the overlay's probabilities, for the instruction it decides for only."""
    from roma_ros.engine.head_overlay import checkpoint_fingerprint, checkpoint_head, save_overlay

    ckpt, _ = exported
    base = RomaModel.load(EngineConfig(model_path=str(ckpt)))
    head = checkpoint_head(base)
    with torch.no_grad():
        head.fc2.bias.add_(3.0)
    overlay = save_overlay(tmp_path / "head.safetensors", head, checkpoint_fingerprint(ckpt),
                           {"applies_to": ["watch the door"]})
    units = make_units(6, seed=5)
    runs = {}
    for backend in ("torch", "onnxruntime"):
        model = load_model(EngineConfig(model_path=str(ckpt), speak_head=str(overlay)), backend)
        model.set_instructions(["watch the door", "watch the window"])
        runs[backend] = [model.ingest(u) for u in units]
    for t, o in zip(runs["torch"], runs["onnxruntime"]):
        assert set(t.task_probs) == set(o.task_probs) == {"watch the door"}
        assert abs(t.task_probs["watch the door"] - o.task_probs["watch the door"]) < 1e-3
        assert abs(t.prob - o.prob) < 1e-3
        assert t.task_probs["watch the door"] > t.prob  # the overlay's, not the checkpoint's head


def test_the_cache_reaches_the_lm_graph_without_copies(exported, tmp_path):
    """Decode must not copy the past per token: the runtime binds views of the cache buffers,
    and in the graph ONNX Runtime actually runs, every cache input feeds the attention matmuls
    directly (no Concat, Transpose or Slice that would copy it)."""
    import onnxruntime as ort

    ckpt, _ = exported
    model = load_model(EngineConfig(model_path=str(ckpt), max_context_tokens=300), "onnxruntime")
    model.ingest(make_units(1, seed=3)[0])
    info = model.cache.append(np.full((3, 1), model.cache.next_start, np.int64), model.cache.new_group("probe"))
    keys, values, mask = model.cache.explicit_inputs(info)
    storage = {model.cache.k.untyped_storage().data_ptr(), model.cache.v.untyped_storage().data_ptr()}
    assert len(keys) == len(values) == 4 * 2 and mask.shape[-1] == info.hi + 1
    for view in keys + values:
        assert view.is_contiguous() and view.shape == (info.hi, 16)
        assert view.untyped_storage().data_ptr() in storage  # the cache itself, not a copy

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(ckpt / "onnx" / "lm_step.onnx"), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    cache_inputs = {i.name for i in graph.input if i.name.startswith("past_")}
    consumers = {node.op_type for node in graph.node for name in node.input if name in cache_inputs}
    assert cache_inputs and consumers <= {"MatMul", "FusedMatMul", "Shape"}, consumers
