"""The compute half of the ROMA runtime, behind one small interface so backends can swap.

RomaModel (roma.py) owns the streaming logic: unit layout, positions, the bounded KV cache and its
eviction and re-basing, answer segments. A runtime only computes, on tensors RomaModel gives it:

- `embed(ids)`: token embeddings, (n,) -> (n, H);
- `video_features(pixels, grid)` and `audio_features(feats)`: the vision and audio towers;
- `step(embeds, info, cache, head_states)`: one forward of the text model over n new tokens at the
  positions and mask that `cache.append()` prepared; it leaves the new keys/values in the slots
  `append()` reserved, keeps the last token's logits for `next_logits()`, and with head_states=True
  returns the speak head's layer states at the last token, (K, 1, H);
- `speak_prob(states)`: the speak head on those states.

TorchRuntime runs the Hugging Face modules; OrtRuntime (ort_runtime.py) runs ONNX graphs exported
by onnx_export.py; TrtRuntime (tensorrt_backend.py) runs TensorRT engines built from them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from roma_ros.engine.attention import use_packed_gqa
from roma_ros.engine.kv_cache import AppendInfo, BoundedKVCache


class Runtime(ABC):
    name = "abstract"
    config = None  # the thinker's Hugging Face config (vision/audio/text sub-configs)
    device = torch.device("cpu")
    dtype = torch.float32
    layer_ids: list[int] = []

    @property
    def inv_freq(self) -> torch.Tensor:
        """Rotary inverse frequencies of the text model (for re-basing cached keys)."""
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniRotaryEmbedding

        return Qwen2_5OmniRotaryEmbedding(self.config.text_config).inv_freq

    @abstractmethod
    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def video_features(self, pixels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor: ...

    @abstractmethod
    def audio_features(self, feats: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def step(self, embeds: torch.Tensor, info: AppendInfo, cache: BoundedKVCache,
             head_states: bool = False) -> torch.Tensor | None: ...

    @abstractmethod
    def next_logits(self) -> torch.Tensor: ...

    @abstractmethod
    def speak_prob(self, states: torch.Tensor) -> torch.Tensor: ...


class TorchRuntime(Runtime):
    """The Hugging Face thinker modules, with the bounded cache plugged into their attention."""

    name = "torch"

    def __init__(self, thinker, head=None):
        self.thinker = thinker
        self.head = head  # None: towers and text model only (training, encoders)
        self.config = thinker.config
        self.device = thinker.device
        self.dtype = thinker.dtype
        self.layer_ids = list(head.layer_ids) if head is not None else []
        self.lm = thinker.model.language_model
        use_packed_gqa(self.lm)  # masked grouped-query attention without copying the cache per layer
        self.lm_head = thinker.lm_head
        self._embed = thinker.get_input_embeddings()
        self._last_hidden = None

    @property
    def inv_freq(self) -> torch.Tensor:
        return self.lm.rotary_emb.inv_freq

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._embed(ids.to(self.device))

    @torch.no_grad()
    def video_features(self, pixels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        grid_thw = torch.tensor([grid], device=self.device)
        return self.thinker.model.get_video_features(pixels, grid_thw, return_dict=True).pooler_output[0]

    @torch.no_grad()
    def audio_features(self, feats: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(1, feats.shape[1], dtype=torch.long, device=self.device)
        return self.thinker.model.get_audio_features(feats[None], mask, return_dict=True).last_hidden_state

    @torch.no_grad()
    def step(self, embeds: torch.Tensor, info: AppendInfo, cache: BoundedKVCache, head_states: bool = False):
        out = self.lm(inputs_embeds=embeds, position_ids=info.position_ids, attention_mask=info.attention_mask,
                      past_key_values=cache, use_cache=True, output_hidden_states=head_states)
        self._last_hidden = out.last_hidden_state[0, -1]
        if not head_states:
            return None
        return torch.stack([out.hidden_states[i][0, -1] for i in self.layer_ids])[:, None]

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        return self.lm_head(self._last_hidden[None])[0].float()

    @torch.no_grad()
    def speak_prob(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(states)


class ExportedRuntime(Runtime):
    """A runtime over the graphs `roma export` wrote (ONNX Runtime, TensorRT)."""

    @classmethod
    def for_checkpoint(cls, model_path: str | Path, export_dir: str | Path | None = None, **kwargs):
        """The runtime for a checkpoint directory (config from it; graphs default to MODEL/onnx)."""
        from roma_ros.engine.checkpoint import build_thinker_config, read_checkpoint
        from roma_ros.engine.onnx_export import checkpoint_fingerprint

        config = build_thinker_config(read_checkpoint(model_path))
        return cls(export_dir or Path(model_path) / "onnx", config, fingerprint=checkpoint_fingerprint(model_path),
                   **kwargs)

    @staticmethod
    def read_export(export_dir: Path, fingerprint: str | None) -> dict:
        """The export's manifest, refusing graphs exported from another checkpoint."""
        from roma_ros.engine.onnx_export import read_manifest

        manifest = read_manifest(export_dir)
        if fingerprint and manifest.get("checkpoint") and manifest["checkpoint"] != fingerprint:
            raise ValueError(f"the ONNX graphs in {export_dir} were exported from another checkpoint; "
                             "re-run roma export for this model")
        return manifest
