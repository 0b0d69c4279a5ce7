"""Build the streaming model a configuration asks for: checkpoint location and backend."""
from __future__ import annotations

import os
from pathlib import Path

from roma_ros.engine.config import EngineConfig
from roma_ros.engine.interface import StreamingModel

EMBEDDED = "embedded"
BACKENDS = ("torch", "onnxruntime", "tensorrt")


def embedded_model_path() -> Path:
    """The ROMA-tiny checkpoint shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "models" / "roma_tiny"


def resolve_model_path(model_path: str) -> str:
    if model_path in ("", EMBEDDED):
        path = embedded_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the embedded ROMA-tiny model is missing at {path}; "
                                    "set model_path to a checkpoint directory")
        return str(path)
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"model_path {model_path!r} is not a directory")
    return model_path


def auto_threads(cpus: int | None = None) -> int:
    """CPU threads for the model when none are configured. A robot's CPU is shared: threads that
    wait for each other (OpenMP) on cores other processes hold make every step as slow as the
    most delayed thread, so the engine takes at most half the cores (bench/bench_contention.py)."""
    cpus = cpus or os.cpu_count() or 1
    return 1 if cpus <= 2 else min(4, cpus // 2)


def load_model(config: EngineConfig, backend: str = "torch") -> StreamingModel:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if config.threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = auto), got {config.threads}")
    config.model_path = resolve_model_path(config.model_path)
    threads = config.threads or auto_threads()
    import torch

    torch.set_num_threads(threads)  # process-wide: torch's ops on every backend (the ORT glue too)
    from roma_ros.engine.roma import RomaModel

    overlay = overlay_head(config)  # a wrong overlay is refused before minutes of model loading
    if backend == "torch":
        return with_speak_head(RomaModel.load(config), overlay)
    export_dir = config.export_dir or str(Path(config.model_path) / "onnx")
    if config.dtype != "float32":
        raise ValueError(f"backend {backend} runs the exported float32 graphs (TensorRT picks its own "
                         f"precision: tensorrt_precision); set dtype: float32, not {config.dtype}")
    if backend == "onnxruntime":
        from roma_ros.engine.ort_runtime import OrtRuntime

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.device.startswith("cuda") else None
        return with_speak_head(RomaModel.from_runtime(config, OrtRuntime.for_checkpoint(
            config.model_path, export_dir, providers=providers, threads=threads)), overlay)
    from roma_ros.engine.tensorrt_backend import TrtRuntime

    device = config.device if config.device.startswith("cuda") else "cuda"
    return with_speak_head(RomaModel.from_runtime(config, TrtRuntime.for_checkpoint(
        config.model_path, export_dir, precision=config.tensorrt_precision, cache_dir=config.engine_cache_dir or None,
        max_context_tokens=config.max_context_tokens, device=device)), overlay)


def overlay_head(config: EngineConfig):
    """(head, description, instructions it decides for or None for all) of the speak-head overlay `config.speak_head`, checked against the
    checkpoint's fingerprint and text hidden size; None when no overlay is set."""
    if not config.speak_head:
        return None
    from roma_ros.engine.checkpoint import read_checkpoint
    from roma_ros.engine.head_overlay import load_overlay, overlay_instructions

    info = read_checkpoint(config.model_path)
    text = info.thinker_config.get("text_config") or {}
    head, meta = load_overlay(config.speak_head, config.model_path, int(text.get("hidden_size", 0)))
    applies = overlay_instructions(meta)
    scope = "every task" if applies is None else f"{len(applies)} instruction(s): " + "; ".join(applies)
    return head, f"overlay {config.speak_head} (deciding for {scope})", applies


def with_speak_head(model, overlay):
    """`model` deciding with the overlay from `overlay_head` (if any)."""
    if overlay is None:
        return model
    head, source, applies = overlay
    if model.head is not None and len(model.head.layer_ids) != len(head.layer_ids):
        raise ValueError(f"speak_head: the overlay mixes {len(head.layer_ids)} layers, the model's head "
                         f"{len(model.head.layer_ids)}")
    model.use_speak_head(head, source, applies)
    return model
