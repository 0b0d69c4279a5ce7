"""Tiny random Qwen2.5-Omni thinkers, a tiny Qwen-style tokenizer and ROMA-layout checkpoints.

Everything is built offline from the real transformers classes (no downloads): text hidden 64,
4 layers (the speak head mixes the last 4), 4 heads / 2 KV heads, mrope_section [2, 3, 3]
(head_dim 16); vision depth 2 hidden 32 out 64; audio 2 layers d_model 32 out 64. The tokenizer is
byte-level (256 byte tokens, no merges) plus the Qwen special tokens; their ids go into the config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from roma_ros.core.unit import Unit  # noqa: E402
from roma_ros.engine.config import EngineConfig, PromptConfig  # noqa: E402
from roma_ros.engine.speak_head import SpeakHead  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                  "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>"]
SPECIAL_IDS = {t: 256 + i for i, t in enumerate(SPECIAL_TOKENS)}
VOCAB = 280
SMALL_HW = (56, 112)  # 8 video tokens per unit: fast tests
REAL_HW = (168, 336)  # a 16:9 camera frame after the ROMA resize: 72 video tokens


def make_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok.to_str()


def make_tokenizer():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(make_tokenizer_json()))


def tiny_config(layers: int = 4, max_positions: int = 4096):
    from transformers import Qwen2_5OmniThinkerConfig

    cfg = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=False),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=112),
        audio_config=dict(encoder_layers=2, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                          output_dim=64, num_mel_bins=128, max_source_positions=1500, n_window=100),
        audio_token_index=SPECIAL_IDS["<|AUDIO|>"], video_token_index=SPECIAL_IDS["<|VIDEO|>"],
        image_token_index=SPECIAL_IDS["<|IMAGE|>"], audio_start_token_id=SPECIAL_IDS["<|audio_bos|>"],
        audio_end_token_id=SPECIAL_IDS["<|audio_eos|>"], vision_start_token_id=SPECIAL_IDS["<|vision_bos|>"],
        vision_end_token_id=SPECIAL_IDS["<|vision_eos|>"], tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def tiny_thinker(seed: int = 0, layers: int = 4, max_positions: int = 4096, dtype=torch.float32):
    from roma_ros.engine.checkpoint import build_thinker

    torch.manual_seed(seed)
    m = build_thinker(tiny_config(layers, max_positions), dtype=dtype)
    # random init is N(0, 0.02): scale the LM up a little so tokens and layers actually differ
    with torch.no_grad():
        for name, p in m.model.language_model.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0)
        m.lm_head.weight.mul_(20.0)
    return m


def tiny_head(seed: int = 1, variant: str = "mlp") -> SpeakHead:
    torch.manual_seed(seed)
    h = SpeakHead(64, (-4, -3, -2, -1), variant, 16)
    with torch.no_grad():
        h.mixer_logits.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1]))
        for p in h.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    return h


def tiny_prompt() -> PromptConfig:
    return PromptConfig(system_prompt="Watch the stream and speak when useful.")


def tiny_engine(config: EngineConfig | None = None, seed: int = 0, trace: bool = False, thinker=None, head=None,
                **cfg):
    from roma_ros.engine.roma import RomaModel

    if config is None:
        cfg.setdefault("model_profile", "roma-tiny")
        config = EngineConfig(**cfg)
    return RomaModel(config, thinker if thinker is not None else tiny_thinker(seed),
                     head if head is not None else tiny_head(seed + 1), make_tokenizer(), prompt=tiny_prompt(),
                     trace=trace)


def make_unit(index: int, rng: np.random.Generator, hw=SMALL_HW, n_frames: int = 2, audio_len: int = 16000) -> Unit:
    h, w = hw
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n_frames)]
    audio = (rng.standard_normal(audio_len) * 0.1).astype(np.float32)
    return Unit(index=index, start_ns=index * 1_000_000_000, duration_ns=1_000_000_000, frames=frames, audio=audio)


def make_units(n: int, seed: int = 0, hw=SMALL_HW) -> list[Unit]:
    rng = np.random.default_rng(seed)
    return [make_unit(i, rng, hw) for i in range(n)]


# ---- checkpoints in ROMA's layout ------------------------------------------------------------------
def legacy_key(key: str) -> str:
    """transformers-5 thinker key -> the released (legacy) layout, with the `thinker.` prefix."""
    if key.startswith("model.language_model."):
        key = "model." + key[len("model.language_model."):]
    elif key.startswith(("model.audio_tower.", "model.visual.")):
        key = key[len("model."):]
    return "thinker." + key


def write_checkpoint(path: Path, thinker, head: SpeakHead | None, *, full: bool = True, legacy: bool = True,
                     gate_prefix: str = "thinker.", shards: int = 1, prompt: PromptConfig | None = None,
                     talker: bool = True, profile: str | None = "roma-tiny") -> Path:
    """Write a checkpoint dir: config.json (qwen2_5_omni with thinker_config, or a thinker-only config),
    safetensors weights (`thinker.`-prefixed legacy keys + `thinker.gate_*`), tokenizer.json, prompt file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tcfg = thinker.config.to_dict()
    tcfg["model_type"] = "qwen2_5_omni_thinker"
    if head is not None:
        tcfg["gate_layer_ids"] = list(head.layer_ids)
        if head.variant == "mlp":
            tcfg["gate_hidden_dim"] = head.fc1.out_features
    if full:
        cfg = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniModel"], "thinker_config": tcfg,
               "enable_audio_output": False}
    else:
        cfg = tcfg
    (path / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
    tensors = {}
    for k, v in thinker.state_dict().items():
        name = legacy_key(k) if legacy else ("thinker." + k if full else k)
        tensors[name] = v.detach().contiguous().clone()
    if head is not None:
        for k, v in head.roma_state_dict(gate_prefix).items():
            tensors[k] = v.contiguous()
    if full and talker:  # stand-ins for the Talker / token2wav: must be skipped, never built
        tensors["talker.model.layers.0.mlp.up_proj.weight"] = torch.zeros(8, 8)
        tensors["token2wav.code2wav_dit_model.proj.weight"] = torch.zeros(8, 8)
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k] for k in part}, str(path / fn), metadata={"format": "pt"})
            weight_map.update({k: fn for k in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "tokenizer.json").write_text(make_tokenizer_json())
    (path / "roma_prompt.json").write_text(json.dumps((prompt or tiny_prompt()).to_dict(), indent=1))
    if profile is not None:
        (path / "roma_profile.json").write_text(json.dumps({"name": profile, "base": profile}))
    return path
