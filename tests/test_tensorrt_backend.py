"""TensorRT backend: profiles, cache keys and engine-cache verification on CPU; the build and the
runtime where TensorRT and a GPU exist (skipped here with the reason)."""
import importlib.util
import json

import pytest
import torch

from engine_fixtures import SMALL_HW, tiny_head, tiny_thinker, write_checkpoint
from roma_ros.engine.onnx_export import export_checkpoint, file_sha256
from roma_ros.engine.tensorrt_backend import EngineCache, engine_cache_key, graph_profiles, lm_profiles, unit_tokens

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    ckpt = write_checkpoint(tmp_path_factory.mktemp("trt") / "tiny", tiny_thinker(0), tiny_head(1))
    return ckpt, export_checkpoint(ckpt, ckpt / "onnx", frame_sizes=[SMALL_HW])


def test_lm_profiles_cover_a_unit_prefill_and_a_one_token_decode(export):
    _, result = export
    m = result.manifest
    n_unit = unit_tokens(m, SMALL_HW)
    assert n_unit == 8 + 25 + 4  # 4x8 grid merged 2x2 -> 8 video tokens, 25 audio, 4 markers
    unit, decode = lm_profiles(m, max_context_tokens=512, max_unit_tokens=n_unit)
    assert unit.shapes["inputs_embeds"] == ((1, 1, 64), (1, n_unit, 64), (1, n_unit, 64))
    assert unit.shapes["past_key_l3_h1"][2] == (512, 16) and unit.shapes["past_value_l0_h0"][0] == (1, 16)
    assert unit.shapes["attention_mask"][2] == (1, 1, n_unit, 512 + n_unit)
    assert decode.shapes["inputs_embeds"] == ((1, 1, 64),) * 3
    assert decode.shapes["attention_mask"][0] == (1, 1, 1, 2)
    # the profile inputs are exactly the graph's dynamic inputs
    import onnx
    names = {i.name for i in onnx.load(str(result.out_dir / "lm_step.onnx")).graph.input}
    assert set(unit.shapes) == names
    assert graph_profiles(m, "audio", 512, n_unit) == []  # static graphs need none


def test_the_cache_key_changes_with_every_input(export):
    _, result = export
    profiles = lm_profiles(result.manifest, 512, 37)
    onnx_hash = file_sha256(result.out_dir / "lm_step.onnx")
    base = dict(onnx_sha256=onnx_hash, trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7),
                precision="fp16", profiles=profiles)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)  # deterministic
    variants = [dict(onnx_sha256=file_sha256(result.out_dir / "embed.onnx")), dict(trt_version="10.4.0"),
                dict(gpu_name="H100"), dict(compute_capability=(9, 0)), dict(precision="bf16"),
                dict(profiles=lm_profiles(result.manifest, 1024, 37))]
    keys = {engine_cache_key(**{**base, **change}) for change in variants}
    assert len(keys) == len(variants) and key not in keys
    with pytest.raises(ValueError, match="precision"):
        engine_cache_key(**{**base, "precision": "fp8"})


def test_the_engine_cache_verifies_before_loading_and_rebuilds_on_mismatch(tmp_path):
    cache = EngineCache(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return b"engine-bytes-%d" % len(builds)

    data, built = cache.get_or_build("a" * 64, build, onnx="lm_step.onnx", precision="fp16", tensorrt="10", gpu="x")
    assert built and data == b"engine-bytes-1"
    assert cache.get_or_build("a" * 64, build, onnx="lm_step.onnx", precision="fp16", tensorrt="10", gpu="x") == (data, False)
    engine, record = cache.paths("a" * 64)
    engine.write_bytes(b"tampered")  # a corrupted or swapped engine file is never deserialised
    assert cache.load("a" * 64) is None
    data, built = cache.get_or_build("a" * 64, build, onnx="lm_step.onnx", precision="fp16", tensorrt="10", gpu="x")
    assert built and data == b"engine-bytes-2"
    rec = json.loads(record.read_text())
    rec["key"] = "b" * 64  # a record for another key
    record.write_text(json.dumps(rec))
    assert cache.load("a" * 64) is None


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT and a CUDA GPU are needed (not installable on this machine)")
def test_tensorrt_backend_matches_torch_on_a_short_stream(export):  # pragma: no cover - needs TensorRT
    import numpy as np

    from engine_fixtures import make_units
    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import load_model
    from roma_ros.engine.roma import RomaModel

    ckpt, _ = export
    units = make_units(10, seed=4)
    ref = RomaModel.load(EngineConfig(model_path=str(ckpt)))
    trt_model = load_model(EngineConfig(model_path=str(ckpt), device="cuda", tensorrt_precision="fp32"), "tensorrt")
    p_ref = np.array([ref.ingest(u).prob for u in units])
    p_trt = np.array([trt_model.ingest(u).prob for u in units])
    assert np.abs(p_ref - p_trt).max() < 1e-2
