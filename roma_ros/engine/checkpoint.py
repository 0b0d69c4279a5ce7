"""Loading a ROMA checkpoint with upstream transformers: the Thinker only, safetensors only.

Accepted layouts (a local directory in Hugging Face format):
- the full Qwen2.5-Omni / ROMA checkpoint: config.json with model_type `qwen2_5_omni` and a
  `thinker_config`; weights `thinker.*`, `talker.*`, `token2wav.*` (sharded or not). Only the
  `thinker.` tensors are read (safetensors is lazy), so memory stays at the Thinker's: the Talker
  and token2wav are never built nor loaded.
- a thinker-only checkpoint: model_type `qwen2_5_omni_thinker`, keys with or without `thinker.`.
Key names: the released checkpoint uses the legacy module layout (`model.layers.*`,
`audio_tower.*`, `visual.*`); transformers 5 nests them as `model.language_model.*`,
`model.audio_tower.*`, `model.visual.*`. We map both (the same renames transformers' own conversion
mapping applies) and load with an explicit, strict key check.
The speak head: `gate_mixer.logits`, `gate_head_pro_fc1/fc2.*` (MLP) or `gate_head.*` (linear),
with or without `thinker.`; `gate_layer_ids` / `gate_hidden_dim` may appear in the thinker config or
at the top level. A checkpoint without them is refused with a clear error.
Pickle formats (.bin/.pt/.pth/.ckpt) are refused: never unpickle model files.

The model is constructed directly on the target device in the target dtype with weight
initialisation disabled (transformers' `no_init_weights`), then every tensor is copied in from the
safetensors files one at a time (peak host memory: one tensor). Rotary `inv_freq` and the audio
sinusoid table are computed in float32 at construction, exactly as `from_pretrained` does.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
IGNORED_PREFIXES = ("talker.", "token2wav.")


class CheckpointError(ValueError):
    pass


@dataclass
class CheckpointInfo:
    path: Path
    kind: str  # "full" (qwen2_5_omni) or "thinker"
    thinker_config: dict
    gate_layer_ids: list[int] | None = None
    gate_hidden_dim: int | None = None
    weight_files: list[Path] = field(default_factory=list)


def weight_files(path: str | Path) -> list[Path]:
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists missing shards: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
    if pickles:
        raise CheckpointError(
            f"{path} holds only pickle weights {pickles[:3]}: refused (never unpickle model files). "
            "Convert them to safetensors on a trusted machine."
        )
    raise CheckpointError(f"no *.safetensors weights in {path}")


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file}: not a model configuration (a JSON object)")
    mt = cfg.get("model_type", "")
    if mt == "qwen2_5_omni":
        if "thinker_config" not in cfg:
            raise CheckpointError(f"{cfg_file}: qwen2_5_omni config without thinker_config")
        thinker, kind = dict(cfg["thinker_config"]), "full"
    elif mt == "qwen2_5_omni_thinker":
        thinker, kind = dict(cfg), "thinker"
    else:
        raise CheckpointError(f"{cfg_file}: model_type {mt!r} is not qwen2_5_omni or qwen2_5_omni_thinker")

    def pick(key):
        for d in (thinker, cfg):
            if d.get(key) is not None:
                return d[key]
        return None

    gids = pick("gate_layer_ids")
    ghd = pick("gate_hidden_dim")
    return CheckpointInfo(path, kind, thinker, [int(i) for i in gids] if gids is not None else None,
                          int(ghd) if ghd is not None else None, weight_files(path))


def map_key(key: str) -> tuple[str, str] | None:
    """Checkpoint key -> ("model" | "gate", key in our modules), or None for tensors we skip."""
    if key.startswith("thinker."):
        key = key[len("thinker."):]
    elif key.startswith(IGNORED_PREFIXES):
        return None
    if key.startswith("gate_"):
        return "gate", key
    if key.startswith(("audio_tower.", "visual.")):
        return "model", "model." + key
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.", "model.audio_tower.")):
        return "model", "model.language_model." + key[len("model."):]
    return "model", key


def build_thinker_config(info_or_dict, attn_implementation: str = "sdpa"):
    from transformers import Qwen2_5OmniThinkerConfig

    d = dict(info_or_dict.thinker_config if isinstance(info_or_dict, CheckpointInfo) else info_or_dict)
    for k in ("gate_layer_ids", "gate_hidden_dim", "architectures", "transformers_version", "model_type"):
        d.pop(k, None)
    cfg = Qwen2_5OmniThinkerConfig(**d)
    cfg._attn_implementation = attn_implementation
    return cfg


def build_thinker(cfg, dtype=torch.float32, device="cpu", init_weights: bool = True):
    """A Thinker from a config on `device` in `dtype` (random weights unless init_weights=False)."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration
    from transformers.initialization import no_init_weights

    attn = getattr(cfg, "_attn_implementation", None) or "sdpa"
    with torch.device(device):
        if init_weights:
            model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn)
        else:
            with no_init_weights():
                model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(cfg, dtype=dtype, attn_implementation=attn)
    return model.eval().requires_grad_(False)


def load_thinker(path: str | Path, dtype=torch.float32, device="cpu", attn_implementation: str = "sdpa"):
    """Returns (thinker, gate tensors dict (float32, keys without prefix), CheckpointInfo)."""
    from safetensors import safe_open

    info = read_checkpoint(path)
    cfg = build_thinker_config(info, attn_implementation)
    model = build_thinker(cfg, dtype, device, init_weights=False)
    targets = dict(model.state_dict(keep_vars=True))
    persistent = set(targets)
    loaded: set[str] = set()
    unexpected: list[str] = []
    gate: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for f in info.weight_files:
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for key in sf.keys():
                    mapped = map_key(key)
                    if mapped is None:
                        continue
                    kind, name = mapped
                    if kind == "gate":
                        gate[name] = sf.get_tensor(key).float()
                        continue
                    if name not in targets:
                        unexpected.append(key)
                        continue
                    t = sf.get_tensor(key)
                    dst = targets[name]
                    if tuple(t.shape) != tuple(dst.shape):
                        raise CheckpointError(f"{key}: shape {tuple(t.shape)} does not match the config's {tuple(dst.shape)}")
                    dst.data.copy_(t.to(dtype=dst.dtype))
                    loaded.add(name)
    missing = sorted(persistent - loaded)
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if "lm_head.weight" in missing and model.lm_head.weight is model.get_input_embeddings().weight:
        missing.remove("lm_head.weight")
    if missing:
        raise CheckpointError(f"{info.path}: {len(missing)} thinker weights missing, e.g. {missing[:5]} (tied: {tied})")
    if unexpected:
        raise CheckpointError(f"{info.path}: {len(unexpected)} unexpected thinker keys, e.g. {unexpected[:5]}")
    if not gate:
        raise CheckpointError(
            f"{info.path} has no ROMA speak head (no thinker.gate_* tensors): this is a plain Qwen2.5-Omni "
            "checkpoint, not ROMA. The runtime needs thinker.gate_mixer.logits and "
            "thinker.gate_head_pro_fc1/fc2.* (or thinker.gate_head.*)."
        )
    return model, gate, info


def load_tokenizer(path: str | Path):
    """The checkpoint's tokenizer, offline: tokenizer.json if present, else AutoTokenizer (local files)."""
    path = Path(path)
    from transformers import PreTrainedTokenizerFast

    tj = path / "tokenizer.json"
    if tj.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(tj))
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(f"no usable tokenizer in {path} (tokenizer.json or vocab/merges): {e}") from e
