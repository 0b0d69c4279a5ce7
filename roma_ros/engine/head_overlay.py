"""Speak-head overlays: a tuned speak head (from `roma tune`) loaded over a checkpoint's own head.

An overlay is a safetensors file holding only the head, under the released key names
(`thinker.gate_mixer.logits`, `thinker.gate_head_pro_fc1/fc2.*` or `thinker.gate_head.*`), with
metadata saying which base checkpoint it was tuned on. The base checkpoint is never modified.

A head only makes sense on the states of the model it was tuned with, so the overlay records the
base checkpoint's fingerprint and is refused on any other base. The fingerprint covers
config.json and the weight files: every byte of checkpoints up to FULL_HASH_BYTES, and for larger
ones (the 7B: 15 GB, which would take minutes to read at every start) each file's size, its
safetensors header (every tensor's name, dtype, shape and offset) and SAMPLE_BLOCKS blocks of
bytes spread over it, so a re-trained checkpoint of the same shapes still differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from roma_ros.engine.speak_head import SpeakHead

OVERLAY_FORMAT = "roma_ros.speak_head/1"
FULL_HASH_BYTES = 256 * 1024 * 1024
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 64 * 1024
PREFIX = "thinker."


class OverlayError(ValueError):
    """An overlay that cannot be used with this checkpoint (wrong base, not an overlay, bad keys)."""


def _hash_file_sampled(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        h.update(f.read(min(header_len, size - 8)))
        for k in range(SAMPLE_BLOCKS):
            f.seek(max(0, (size - SAMPLE_BLOCK_BYTES) * k // max(1, SAMPLE_BLOCKS - 1)))
            h.update(f.read(SAMPLE_BLOCK_BYTES))


def _hash_file_full(h, path: Path) -> None:
    h.update(f"{path.name}:{path.stat().st_size}".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)


_FINGERPRINTS: dict[tuple, str] = {}


def checkpoint_fingerprint(model_path: str | Path) -> str:
    """A sha256 hex digest identifying the checkpoint's weights (see the module docstring)."""
    from roma_ros.engine.checkpoint import weight_files

    path = Path(model_path)
    files = weight_files(path)
    config = path / "config.json"
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in [config, *files] if f.is_file())
    if stamp in _FINGERPRINTS:
        return _FINGERPRINTS[stamp]
    h = hashlib.sha256(b"roma_ros checkpoint fingerprint v1\n")
    if config.is_file():
        h.update(config.read_bytes())
    full = sum(f.stat().st_size for f in files) <= FULL_HASH_BYTES
    for f in files:
        (_hash_file_full if full else _hash_file_sampled)(h, f)
    _FINGERPRINTS[stamp] = digest = h.hexdigest()
    return digest


def save_overlay(path: str | Path, head: SpeakHead, base_fingerprint: str, metadata: dict | None = None) -> Path:
    """Write `head` as an overlay (atomically: a temporary name, then renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"format": OVERLAY_FORMAT, "base_fingerprint": base_fingerprint, "variant": head.variant,
            "layer_ids": json.dumps(head.layer_ids)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    tensors = {k: v.contiguous() for k, v in head.roma_state_dict(PREFIX).items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_overlay(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(gate tensors without the `thinker.` prefix, metadata) of an overlay file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise OverlayError(f"speak_head: no overlay file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k.removeprefix(PREFIX): f.get_tensor(k).float() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise OverlayError(f"speak_head: {path} is not a safetensors file ({exc})") from None
    if meta.get("format") != OVERLAY_FORMAT:
        raise OverlayError(f"speak_head: {path} is not a roma_ros speak-head overlay (metadata format "
                           f"{meta.get('format')!r}, expected {OVERLAY_FORMAT!r}); make one with `roma tune`")
    other = sorted(k for k in tensors if not k.startswith("gate_"))
    if other:
        raise OverlayError(f"speak_head: {path} holds tensors other than the speak head ({other[:3]}): "
                           f"an overlay never replaces model weights")
    return tensors, meta


def load_overlay(path: str | Path, model_path: str | Path, hidden_size: int,
                 layer_ids: list[int] | None = None) -> tuple[SpeakHead, dict[str, str]]:
    """The overlay's head, checked against the base checkpoint it is loaded over."""
    tensors, meta = read_overlay(path)
    base = checkpoint_fingerprint(model_path)
    tuned_on = meta.get("base_fingerprint", "")
    if tuned_on != base:
        raise OverlayError(
            f"speak_head: {path} was tuned on another checkpoint ({meta.get('base_model', '?')}, fingerprint "
            f"{tuned_on[:12] or 'missing'}) than model_path {model_path} (fingerprint {base[:12]}); a head only "
            f"fits the states of its own base model: point model_path to that checkpoint or tune again")
    overlay_layers = json.loads(meta.get("layer_ids", "null"))
    if layer_ids is not None and overlay_layers is not None and list(overlay_layers) != list(layer_ids):
        raise OverlayError(f"speak_head: {path} reads layers {overlay_layers}, the engine's head reads {layer_ids}")
    try:
        head = SpeakHead.from_gate_tensors(tensors, hidden_size, overlay_layers, meta.get("variant", "auto"))
    except ValueError as exc:
        raise OverlayError(f"speak_head: {path}: {exc}") from None
    return head, meta


def overlay_instructions(meta: dict[str, str]) -> list[str] | None:
    """The instructions an overlay decides for (metadata `applies_to`), or None: every task."""
    applies = json.loads(meta.get("applies_to", "null"))
    if applies is None or applies == "*":
        return None
    if not isinstance(applies, list) or not all(isinstance(t, str) for t in applies):
        raise OverlayError(f"speak_head: the overlay's applies_to must be a list of instructions or '*', got {applies!r}")
    return applies


def read_gate_tensors(model_path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's own speak-head tensors (keys without the prefix), without loading the model."""
    from safetensors import safe_open

    from roma_ros.engine.checkpoint import map_key, weight_files

    gate = {}
    for f in weight_files(model_path):
        with safe_open(str(f), framework="pt", device="cpu") as sf:
            for key in sf.keys():
                mapped = map_key(key)
                if mapped is not None and mapped[0] == "gate":
                    gate[mapped[1]] = sf.get_tensor(key).float()
    return gate


def checkpoint_head(model) -> SpeakHead:
    """The checkpoint's own speak head of a loaded RomaModel (whatever its backend), in torch."""
    from roma_ros.engine.checkpoint import read_checkpoint

    config = model.config
    info = read_checkpoint(config.model_path)
    hidden = int(model.runtime.config.text_config.hidden_size)
    return SpeakHead.from_gate_tensors(read_gate_tensors(config.model_path), hidden,
                                       config.gate_layer_ids or info.gate_layer_ids, config.head_variant)


def comparison_head(spec: str, model) -> tuple[SpeakHead, str, list[str] | None]:
    """(head, label, instructions it decides for or None for all) for `roma eval --compare-head`:
    "base" (the checkpoint's own head, for every task) or an overlay path."""
    if spec == "base":
        return checkpoint_head(model), "base (the checkpoint's head)", None
    hidden = int(model.runtime.config.text_config.hidden_size)
    head, meta = load_overlay(spec, model.config.model_path, hidden)
    return head, f"overlay {spec}", overlay_instructions(meta)
