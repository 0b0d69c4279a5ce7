"""Build the streaming model a configuration asks for: checkpoint location and backend."""
from __future__ import annotations

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


def load_model(config: EngineConfig, backend: str = "torch") -> StreamingModel:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    config.model_path = resolve_model_path(config.model_path)
    if backend == "torch":
        from roma_ros.engine.roma import RomaModel

        return RomaModel.load(config)
    raise NotImplementedError(f"the {backend} backend is not available in this build; use backend=torch")
