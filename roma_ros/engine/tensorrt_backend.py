"""TensorRT backend: engines built from the ONNX graphs of onnx_export.py, cached and verified.

Building: one engine per graph (embed, audio, vision per frame grid, lm_step, speak_head), fp16 by
default (bf16, fp32, int8 selectable; int8 without a calibrator uses TensorRT's implicit
quantisation and is for experiments only). The LM step gets two optimisation profiles: `unit`
(n up to the largest unit, the past up to max_context_tokens) and `decode` (n = 1); the runtime
picks the profile per call.

Engine cache: an engine is valid only for the exact ONNX file, TensorRT version, GPU (name and
compute capability), precision and profiles it was built with. The cache key is the sha256 of
all of these; an engine file is stored with a JSON record of its key and its own sha256, and is
verified (key and file hash) before it is deserialised. A mismatch rebuilds; nothing is loaded
on trust.

Everything but the build and the execution is plain Python and tested on CPU
(tests/test_tensorrt_backend.py); the build and TrtRuntime need `tensorrt` and a CUDA GPU, and
their tests skip elsewhere. On Jetson, use JetPack's tensorrt (python3-libnvinfer) in the venv
with --system-site-packages; see the README.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from roma_ros.engine.kv_cache import AppendInfo, BoundedKVCache
from roma_ros.engine.onnx_export import file_sha256, kv_input_names
from roma_ros.engine.runtime import ExportedRuntime

PRECISIONS = ("fp16", "bf16", "fp32", "int8")


@dataclass(frozen=True)
class Profile:
    """min/opt/max shape per dynamic input of one graph."""

    name: str
    shapes: dict  # input -> (min, opt, max), each a tuple of ints

    def to_json(self) -> dict:
        return {"name": self.name, "shapes": {k: [list(s) for s in v] for k, v in sorted(self.shapes.items())}}


def unit_tokens(manifest: dict, frame_size: tuple[int, int]) -> int:
    """Tokens of one unit: vision_bos, audio_bos, video tokens, audio tokens, audio_eos, vision_eos."""
    for entry in manifest["vision"].values():
        if tuple(entry["frame_size"]) == tuple(frame_size):
            return int(entry["outputs"]["video_embeds"][0]) + int(manifest["audio_tokens"]) + 4
    raise ValueError(f"no vision graph for frame size {frame_size} in the export")


def lm_profiles(manifest: dict, max_context_tokens: int, max_unit_tokens: int) -> list[Profile]:
    """The LM step's profiles: a unit prefill (or a text insertion) and a one-token decode."""
    layers, kv, hd, hidden = (manifest[k] for k in ("num_layers", "num_kv_heads", "head_dim", "hidden_size"))
    cap = int(max_context_tokens)
    n_max = int(max_unit_tokens)

    keys, values = kv_input_names(int(layers), int(kv))

    def shapes(n: tuple[int, int, int], past: tuple[int, int, int]) -> dict:
        return {
            "inputs_embeds": tuple((1, x, hidden) for x in n),
            "position_ids": tuple((3, 1, x) for x in n),
            "attention_mask": tuple((1, 1, x, p + x) for x, p in zip(n, past)),
            **{name: tuple((p, hd) for p in past) for name in keys + values},
        }

    return [Profile("unit", shapes((1, n_max, n_max), (1, cap // 2, cap))),
            Profile("decode", shapes((1, 1, 1), (1, cap // 2, cap)))]


def graph_profiles(manifest: dict, graph: str, max_context_tokens: int, max_unit_tokens: int) -> list[Profile]:
    hidden, k = manifest["hidden_size"], len(manifest["layer_ids"])
    if graph == "lm_step":
        return lm_profiles(manifest, max_context_tokens, max_unit_tokens)
    if graph == "embed":
        return [Profile("ids", {"input_ids": ((1,), (8,), (max(8, int(max_unit_tokens)),))})]
    if graph == "speak_head":
        return [Profile("states", {"head_states": ((k, 1, hidden), (k, 1, hidden), (k, 64, hidden))})]
    return []  # static graphs (towers)


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: tuple[int, int],
                     precision: str, profiles: list[Profile]) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    record = {"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name,
              "compute_capability": list(compute_capability), "precision": precision,
              "profiles": [p.to_json() for p in profiles]}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass
class EngineRecord:
    key: str
    engine_sha256: str
    onnx: str
    precision: str
    tensorrt: str
    gpu: str


class EngineCache:
    """Engines on disk, each with a record; `get_or_build` verifies before returning bytes."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key[:32]}.engine", self.dir / f"{key[:32]}.json"

    def load(self, key: str) -> bytes | None:
        """The engine for key, if present and intact (record key and file hash match)."""
        engine, record = self.paths(key)
        if not (engine.is_file() and record.is_file()):
            return None
        try:
            rec = EngineRecord(**json.loads(record.read_text()))
        except (ValueError, TypeError):
            return None
        data = engine.read_bytes()
        if rec.key != key or hashlib.sha256(data).hexdigest() != rec.engine_sha256:
            return None
        return data

    def store(self, key: str, data: bytes, **info) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        engine, record = self.paths(key)
        tmp = engine.with_suffix(".engine.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, engine)  # readers never see a half-written engine
        rec = EngineRecord(key=key, engine_sha256=hashlib.sha256(data).hexdigest(), **info)
        record.write_text(json.dumps(asdict(rec), indent=2) + "\n")
        return engine

    def get_or_build(self, key: str, build: Callable[[], bytes], **info) -> tuple[bytes, bool]:
        """(engine bytes, built now?)"""
        data = self.load(key)
        if data is not None:
            return data, False
        data = build()
        self.store(key, data, **info)
        return data, True


# ---- TensorRT proper (needs the tensorrt package and a GPU) -------------------------------------
def _trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("backend tensorrt needs NVIDIA TensorRT (`import tensorrt`): install it from "
                           "NVIDIA's packages (JetPack on Jetson); it is not on PyPI for every platform") from exc
    return trt


def build_engine(onnx_path: str | Path, precision: str, profiles: list[Profile], workspace_gib: float = 4.0) -> bytes:
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    flag = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}.get(precision)
    if flag:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for profile in profiles:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.shapes.items():
            p.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(p)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(data)


class TrtRuntime(ExportedRuntime):
    """Runs the exported graphs as TensorRT engines on a CUDA device (torch tensors as buffers)."""

    name = "tensorrt"

    def __init__(self, export_dir: str | Path, thinker_config, precision: str = "fp16",
                 cache_dir: str | Path | None = None, max_context_tokens: int = 8192, device: str = "cuda",
                 fingerprint: str | None = None):
        trt = _trt()
        if not torch.cuda.is_available():
            raise RuntimeError("backend tensorrt needs a CUDA GPU")
        self.trt = trt
        self.export_dir = Path(export_dir)
        self.manifest = self.read_export(self.export_dir, fingerprint)
        self.config = thinker_config
        self.device = torch.device(device)
        self.dtype = torch.float32  # graph I/O; the engine computes in `precision`
        self.layer_ids = list(self.manifest["layer_ids"])
        self.precision = precision
        self.cache = EngineCache(cache_dir or self.export_dir / "tensorrt")
        props = torch.cuda.get_device_properties(self.device)
        self.gpu = (props.name, (props.major, props.minor))
        max_unit = max(unit_tokens(self.manifest, tuple(v["frame_size"])) for v in self.manifest["vision"].values())
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._stream = torch.cuda.Stream(self.device)
        self._engines = {}
        for graph in ("embed", "audio", "lm_step", "speak_head"):
            self._engines[graph] = self._load(self.manifest["graphs"][graph]["file"],
                                              graph_profiles(self.manifest, graph, max_context_tokens, max_unit))
        self._vision = {}
        self._logits = None
        keys, values = kv_input_names(int(self.manifest["num_layers"]), int(self.manifest["num_kv_heads"]))
        self._kv_names = keys + values

    def _load(self, file: str, profiles: list[Profile]):
        onnx_path = self.export_dir / file
        key = engine_cache_key(file_sha256(onnx_path), self.trt.__version__, self.gpu[0], self.gpu[1],
                               self.precision, profiles)
        data, _ = self.cache.get_or_build(key, lambda: build_engine(onnx_path, self.precision, profiles),
                                          onnx=file, precision=self.precision, tensorrt=self.trt.__version__,
                                          gpu=self.gpu[0])
        engine = self._runtime.deserialize_cuda_engine(data)
        return engine, engine.create_execution_context(), [p.name for p in profiles]

    def _run(self, graph, inputs: dict[str, torch.Tensor], profile: int = 0) -> list[torch.Tensor]:
        engine, context, _ = graph
        trt = self.trt
        with torch.cuda.stream(self._stream):
            if engine.num_optimization_profiles > 1:
                context.set_optimization_profile_async(profile, self._stream.cuda_stream)
            keep = []
            for name, tensor in inputs.items():
                tensor = tensor.to(self.device).contiguous()
                keep.append(tensor)
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = []
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                    continue
                dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64,
                         trt.bfloat16: torch.bfloat16}[engine.get_tensor_dtype(name)]
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=self.device)
                context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self._stream.synchronize()
        return outputs

    def embed(self, ids):
        return self._run(self._engines["embed"], {"input_ids": ids.long()})[0].float()

    def video_features(self, pixels, grid):
        key = f"{grid[1]}x{grid[2]}"
        if key not in self._vision:
            entry = self.manifest["vision"].get(key)
            if entry is None:
                raise ValueError(f"no vision graph for grid {key}; re-run roma export with --frame-size")
            self._vision[key] = self._load(entry["file"], [])
        return self._run(self._vision[key], {"pixel_values": pixels.float()})[0].float()

    def audio_features(self, feats):
        return self._run(self._engines["audio"], {"input_features": feats.float()})[0].float()

    def step(self, embeds, info: AppendInfo, cache: BoundedKVCache, head_states: bool = False):
        past_k, past_v, mask = cache.explicit_inputs(info)
        profile = 1 if embeds.shape[1] == 1 else 0
        past = {name: view.float() for name, view in zip(self._kv_names, past_k + past_v)}  # a float32 cache: no copy
        logits, states, new_k, new_v = self._run(self._engines["lm_step"], {
            "inputs_embeds": embeds.float(), "position_ids": info.position_ids.long(), "attention_mask": mask.float(),
            **past}, profile)
        cache.write_new(info, new_k, new_v)
        self._logits = logits[0].float()
        return states.float() if head_states else None

    def next_logits(self):
        return self._logits

    def speak_prob(self, states):
        return self._run(self._engines["speak_head"], {"head_states": states.float()})[0].float()
