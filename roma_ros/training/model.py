"""ROMA-tiny's architecture, tokenizer and checkpoint writer (ROMA's checkpoint layout).

- Tokenizer: byte-level BPE trained (with `tokenizers`) on the task corpus of data.py, plus the
  Qwen2.5-Omni special tokens; their ids go into the thinker config exactly where the engine
  reads them (audio/video token ids, audio/vision start/end ids).
- Thinker: a real `Qwen2_5OmniThinkerForConditionalGeneration` (transformers), text hidden 128,
  4 layers (the speak head mixes the last 4), 4 query / 2 KV heads, head dim 32,
  mrope_section [4, 6, 6]; vision ViT depth 2 hidden 32 -> 128; Whisper-style audio encoder
  2 layers d_model 32 -> 128. The encoders are pretrained on the domain's classes (towers.py)
  and then frozen, as ROMA freezes its pretrained encoders; the LM and the speak head are trained.
- Speak head: MLP variant, keys thinker.gate_mixer.logits, thinker.gate_head_pro_fc1/fc2.*.
- Checkpoint: config.json (model_type qwen2_5_omni + thinker_config), model.safetensors with
  `thinker.`-prefixed keys in the released (legacy) layout, tokenizer.json, roma_prompt.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from roma_ros.core.profile import PROFILE_FILE_NAME, TINY
from roma_ros.engine.config import PromptConfig
from roma_ros.engine.speak_head import SpeakHead
from roma_ros.training import data

# roma-tiny's frames and audio; the prompt comes from the roma_prompt.json written beside it.
TINY_PROFILE_FILE = {"name": TINY, "base": TINY}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                  "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>"]
SPECIAL_IDS = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
TEXT_HIDDEN = 128
LAYERS = 4
GATE_HIDDEN = TEXT_HIDDEN // 4
BPE_VOCAB = 640


def prompt_config() -> PromptConfig:
    return PromptConfig(system_prompt=data.SYSTEM_PROMPT)


def build_tokenizer_json() -> str:
    """Byte-level BPE over the task corpus (deterministic) + the special tokens at ids 0..10."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    p = prompt_config()
    scaffolding = [p.prefix_template.format(system=p.system_prompt), p.assistant_prefix, p.resume_user, "\n"]
    texts = (data.corpus() + scaffolding) * 4
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()


def tokenizer_from_json(text: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text))


def thinker_config(vocab_size: int):
    from transformers import Qwen2_5OmniThinkerConfig

    cfg = Qwen2_5OmniThinkerConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN,
                         num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                         tie_word_embeddings=False),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT_HIDDEN,
                           fullatt_block_indexes=[1], window_size=112),
        audio_config=dict(encoder_layers=2, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                          output_dim=TEXT_HIDDEN, num_mel_bins=128, max_source_positions=1500, n_window=100),
        audio_token_index=SPECIAL_IDS["<|AUDIO|>"], video_token_index=SPECIAL_IDS["<|VIDEO|>"],
        image_token_index=SPECIAL_IDS["<|IMAGE|>"], audio_start_token_id=SPECIAL_IDS["<|audio_bos|>"],
        audio_end_token_id=SPECIAL_IDS["<|audio_eos|>"], vision_start_token_id=SPECIAL_IDS["<|vision_bos|>"],
        vision_end_token_id=SPECIAL_IDS["<|vision_eos|>"], tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def build_model(vocab_size: int, seed: int):
    """A freshly initialised thinker (seeded) and MLP speak head."""
    from roma_ros.engine.checkpoint import build_thinker

    torch.manual_seed(seed)
    thinker = build_thinker(thinker_config(vocab_size), dtype=torch.float32)
    # Towers with N(0, 0.02) weights give nearly constant features: start them at unit gain so
    # their pretraining (towers.py) starts from features that differ between inputs.
    with torch.no_grad():
        for tower in (thinker.model.visual, thinker.model.audio_tower):
            for name, p in tower.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 1.0 / max(1, p[0].numel()) ** 0.5)
    head = SpeakHead(TEXT_HIDDEN, (-4, -3, -2, -1), "mlp", GATE_HIDDEN)
    return thinker, head


def legacy_key(key: str) -> str:
    """transformers-5 thinker key -> the released checkpoint layout, with the `thinker.` prefix."""
    if key.startswith("model.language_model."):
        key = "model." + key[len("model.language_model."):]
    elif key.startswith(("model.audio_tower.", "model.visual.")):
        key = key[len("model."):]
    return "thinker." + key


def write_checkpoint(path: str | Path, thinker, head: SpeakHead, tokenizer_json: str,
                     prompt: PromptConfig | None = None, dtype=torch.float16) -> Path:
    """ROMA's layout: config.json (qwen2_5_omni + thinker_config), model.safetensors (thinker.*,
    thinker.gate_*), tokenizer.json, roma_prompt.json. Weights stored in `dtype` (float16: half the
    size; the speak head stays float32)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tcfg = thinker.config.to_dict()
    tcfg["model_type"] = "qwen2_5_omni_thinker"
    tcfg["gate_layer_ids"] = list(head.layer_ids)
    tcfg["gate_hidden_dim"] = head.fc1.out_features
    for k in ("_attn_implementation_autoset", "transformers_version"):
        tcfg.pop(k, None)
    cfg = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniModel"], "thinker_config": tcfg,
           "enable_audio_output": False}
    (path / "config.json").write_text(json.dumps(cfg, indent=1, default=str) + "\n")
    tensors = {}
    for k, v in thinker.state_dict().items():
        tensors[legacy_key(k)] = v.detach().to(dtype).contiguous().clone()
    for k, v in head.roma_state_dict("thinker.").items():
        tensors[k] = v.float().contiguous()
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "tokenizer.json").write_text(tokenizer_json)
    (path / "roma_prompt.json").write_text(json.dumps((prompt or prompt_config()).to_dict(), indent=1) + "\n")
    (path / PROFILE_FILE_NAME).write_text(json.dumps(TINY_PROFILE_FILE, indent=1) + "\n")
    return path


@torch.no_grad()
def calibrate_towers(thinker, encoder, units) -> dict:
    """Standardize the frozen towers' outputs per dimension (zero mean, unit variance over the
    given units) by folding the statistics into the last projection of each tower (vision merger
    mlp.2, audio proj). Random towers share a large common component across inputs; removing it
    lets the LM see the differences between images and sounds from the first step. The runtime
    computes exactly the same features: the change lives in the weights."""
    from roma_ros.engine.positions import AUDIO, VIDEO, unit_positions

    vid, aud = [], []
    encoder.reset()
    for u in units:
        e = encoder.encode(u)
        _, kinds, _ = unit_positions(0, e.layout)
        k = torch.from_numpy(kinds.astype("int64"))
        vid.append(e.embeds[0][k == VIDEO])
        aud.append(e.embeds[0][k == AUDIO])
    out = {}
    for name, feats, lin in (("video", torch.cat(vid), thinker.model.visual.merger.mlp[2]),
                             ("audio", torch.cat(aud), thinker.model.audio_tower.proj)):
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-3)
        lin.weight.div_(std[:, None])
        lin.bias.sub_(mean).div_(std)
        out[name] = {"mean_norm": float(mean.norm()), "std_mean": float(std.mean())}
    encoder.reset()
    # the encoder caches the bos/eos embeddings only; tower outputs are recomputed per unit
    return out
