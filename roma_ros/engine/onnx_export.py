"""ROMA checkpoint -> ONNX graphs for the ONNX Runtime and TensorRT backends (`roma export`).

Graphs (float32, opset 17 by default; all dims batch-free except where noted):

| file | inputs | outputs |
|---|---|---|
| `embed.onnx` | `input_ids` int64 (n) | `embeds` (n, H) |
| `vision_{gh}x{gw}.onnx` | `pixel_values` (gh*gw, 3*2*14*14) | `video_embeds` (gh*gw/4, H) |
| `audio.onnx` | `input_features` (n_mels, 100) | `audio_embeds` (25, H) |
| `lm_step.onnx` | `inputs_embeds` (1, n, H), `position_ids` int64 (3, 1, n), `attention_mask` (1, 1, n, past+n) additive, `past_key_l{l}_h{h}`/`past_value_l{l}_h{h}` (past, head_dim) for each layer l and KV head h | `logits` (1, V) at the last token, `head_states` (K, 1, H) at the last token, `new_keys`/`new_values` (L, 1, kv_heads, n, head_dim) |
| `speak_head.onnx` | `head_states` (K, N, H) | `probability` (N) |

`n` and `past` are dynamic: one LM graph serves the unit prefill (n = the unit's tokens) and the
single-token decode (n = 1). The KV cache is explicit: the runtime passes the cached slots as
`past_*` with a mask that says which slots each new token may see (bounded_kv_cache semantics:
slot order, not slot index, is causality) and writes `new_*` back into the slots it reserved, so
eviction and re-basing stay in roma_ros.engine.kv_cache for every backend. One past input per
layer and KV head is a contiguous run of the cache buffer, so runtimes bind the cache itself
instead of copying it for every token, and the graph attends over past and new tokens without
concatenating them.

The vision tower's window attention and 2-D rotary are computed from the frame grid at trace
time, so a vision graph is exported per frame size (after the ROMA resize; `--frame-size`). The
audio graph is fixed: one unit is always 100 mel frames.

`roma_export.json` beside the graphs records shapes, opset, the speak-head layers, the versions
used and a fingerprint of the checkpoint; backends refuse graphs of another checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

from roma_ros.engine.attention import use_packed_gqa

MANIFEST = "roma_export.json"
FORMAT_VERSION = 2  # 2: the past as one input per layer and KV head
DEFAULT_OPSET = 17
AUDIO_FRAMES = 100  # mel frames per 1-second unit
DEFAULT_FRAME_SIZES = ((360, 640), (168, 336))  # a 640x360 camera; ROMA-tiny's scenes


def vision_file(grid_h: int, grid_w: int) -> str:
    return f"vision_{grid_h}x{grid_w}.onnx"


def checkpoint_fingerprint(model_path: str | Path) -> str:
    """sha256 over config.json and the names and sizes of the weight files (cheap for 17 GB)."""
    from roma_ros.engine.checkpoint import weight_files

    root = Path(model_path)
    h = hashlib.sha256((root / "config.json").read_bytes())
    for f in weight_files(root):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- graph modules ----------------------------------------------------------------------------
class EmbedGraph(nn.Module):
    def __init__(self, thinker):
        super().__init__()
        self.embed = thinker.get_input_embeddings()

    def forward(self, input_ids):
        return self.embed(input_ids)


class VisionGraph(nn.Module):
    """The vision tower for one frame grid (1, gh, gw)."""

    def __init__(self, thinker, grid_h: int, grid_w: int):
        super().__init__()
        self.model = thinker.model
        self.grid = (1, int(grid_h), int(grid_w))

    def forward(self, pixel_values):
        grid = torch.tensor([self.grid])
        return self.model.get_video_features(pixel_values, grid, return_dict=True).pooler_output[0]


class AudioGraph(nn.Module):
    """The audio tower for one unit (a fixed number of mel frames). The chunking indices that HF
    computes with data-dependent Python are computed once here and passed as its documented
    precomputed kwargs, so the traced graph has no shape-dependent control flow."""

    def __init__(self, thinker, frames: int = AUDIO_FRAMES):
        super().__init__()
        from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as hf

        self.tower = thinker.model.audio_tower
        lens = torch.tensor([frames])
        n_mels = int(self.tower.config.num_mel_bins)
        _, chunk_lengths = hf.chunk_and_pad_features(torch.zeros(n_mels, frames), lens, self.tower.n_window)
        cu = hf.get_audio_cu_seqlens(chunk_lengths)
        self.lengths = [int(x) for x in chunk_lengths.tolist()]
        self.precomputed = dict(chunk_lengths=chunk_lengths, valid_indices=hf.get_valid_indices(chunk_lengths),
                                pool_indices=hf.get_pool_indices(lens), cu_seqlens=cu,
                                max_seqlen=int((cu[1:] - cu[:-1]).max()))
        self.lens = lens
        self.aftercnn = self.tower._get_feat_extract_output_lengths(lens)[0]

    def forward(self, input_features):
        longest = max(self.lengths)
        pieces = input_features.T.split(self.lengths, dim=0)
        padded = torch.stack([F.pad(p, (0, 0, 0, longest - p.shape[0])) for p in pieces]).transpose(1, 2)
        out = self.tower(input_features, feature_lens=self.lens, aftercnn_lens=self.aftercnn,
                         padded_feature=padded, **dict(self.precomputed))
        return out.last_hidden_state


SPLIT_PAST = "roma_split_past"


def kv_input_names(layers: int, kv_heads: int) -> tuple[list[str], list[str]]:
    """The LM step's cache inputs: one (past, head_dim) key and value input per layer and KV head."""
    keys = [f"past_key_l{layer}_h{head}" for layer in range(layers) for head in range(kv_heads)]
    return keys, [name.replace("past_key", "past_value") for name in keys]


class _SplitKV:
    """What the explicit cache hands to the attention function: the cached part (one tensor per KV
    head) and the new tokens (1, kv_heads, n, head_dim), never concatenated."""

    def __init__(self, past: list[torch.Tensor], new: torch.Tensor, masks: dict):
        self.past, self.new, self.masks = past, new, masks


def split_past_attention(module, query: torch.Tensor, key: _SplitKV, value: _SplitKV,
                         attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Masked grouped-query attention over [past, new] computed in two parts with one softmax.

    Concatenating the past and the new keys (what a cache's update normally returns) copies the
    whole past in every layer of every step; here the scores of each part are taken against the
    cache input as it is, their exponentials share one maximum and one sum, and the two weighted
    value sums are added. The g query heads of a KV head are stacked along the query axis, as in
    attention.packed_gqa_sdpa. Export-only: `query` (1, H, n, D); returns ((1, n, H, D), None)."""
    groups = int(getattr(module, "num_key_value_groups", 1))
    _, heads, n, d = query.shape
    kv_heads = key.new.shape[1]
    scale = scaling if scaling is not None else d ** -0.5
    packed = query.reshape(kv_heads, groups * n, d)
    past_mask, new_mask = key.masks["past"], key.masks["new"]  # (g*n, past), (g*n, n)
    outputs = []
    for h in range(kv_heads):
        q = packed[h]
        s_past = torch.matmul(q, key.past[h].transpose(0, 1)) * scale + past_mask
        s_new = torch.matmul(q, key.new[0, h].transpose(0, 1)) * scale + new_mask
        top = torch.maximum(s_past.amax(-1, keepdim=True), s_new.amax(-1, keepdim=True))
        e_past, e_new = torch.exp(s_past - top), torch.exp(s_new - top)
        total = e_past.sum(-1, keepdim=True) + e_new.sum(-1, keepdim=True)
        outputs.append((torch.matmul(e_past, value.past[h]) + torch.matmul(e_new, value.new[0, h])) / total)
    out = torch.stack(outputs).reshape(1, heads, n, d).transpose(1, 2)
    return out.contiguous(), None


AttentionInterface.register(SPLIT_PAST, split_past_attention)


def _explicit_cache_class():
    from transformers.cache_utils import Cache, CacheLayerMixin

    class Layer(CacheLayerMixin):
        is_compileable = False
        is_sliding = False

        def __init__(self, past_k: list[torch.Tensor], past_v: list[torch.Tensor], masks: dict):
            super().__init__()
            self.past_k, self.past_v, self.masks = past_k, past_v, masks
            self.is_initialized = True
            self.new = None

        def lazy_initialization(self, key_states, value_states):
            pass

        def update(self, key_states, value_states, *args, **kwargs):
            self.new = (key_states, value_states)
            return _SplitKV(self.past_k, key_states, self.masks), _SplitKV(self.past_v, value_states, self.masks)

        def get_mask_sizes(self, query_length: int):
            return self.past_k[0].shape[0] + query_length, 0

        def get_seq_length(self) -> int:
            return self.past_k[0].shape[0]

        def get_max_length(self) -> int:
            return -1

        def reset(self):
            pass

    class ExplicitCache(Cache):
        def __init__(self, past_keys: list[list[torch.Tensor]], past_values: list[list[torch.Tensor]], masks: dict):
            super().__init__(layers=[Layer(k, v, masks) for k, v in zip(past_keys, past_values)])

        @property
        def is_compileable(self) -> bool:
            return False

    return ExplicitCache


class LMStepGraph(nn.Module):
    """One text-model forward over n new tokens with the KV cache as explicit inputs/outputs.

    The past comes as one (past, head_dim) input per layer and KV head: with the cache's layout
    (layers, 1, kv_heads, slots, head_dim), each of them is a contiguous run of the cache buffer,
    so a runtime can hand the graph the cache itself (ONNX Runtime I/O binding, TensorRT tensor
    addresses) instead of a copy, and the graph reads it without concatenating (split_past_attention)."""

    def __init__(self, thinker, layer_ids):
        super().__init__()
        self.lm = thinker.model.language_model
        self.lm_head = thinker.lm_head
        self.layer_ids = [int(i) for i in layer_ids]
        tcfg = self.lm.config
        self.layers, self.kv_heads = int(tcfg.num_hidden_layers), int(tcfg.num_key_value_heads)
        self.groups = int(tcfg.num_attention_heads) // self.kv_heads
        self._cache_class = _explicit_cache_class()

    def forward(self, inputs_embeds, position_ids, attention_mask, *past):
        cells = self.layers * self.kv_heads
        keys, values = past[:cells], past[cells:]
        per_layer = lambda flat: [list(flat[i * self.kv_heads:(i + 1) * self.kv_heads])  # noqa: E731
                                  for i in range(self.layers)]
        past_len = keys[0].shape[0]
        rows = attention_mask[0, 0].repeat(self.groups, 1)  # one row per packed query
        masks = {"past": rows[:, :past_len], "new": rows[:, past_len:]}
        cache = self._cache_class(per_layer(keys), per_layer(values), masks)
        attn = self.lm.config._attn_implementation
        self.lm.config._attn_implementation = SPLIT_PAST
        try:
            out = self.lm(inputs_embeds=inputs_embeds, position_ids=position_ids,
                          attention_mask={"full_attention": attention_mask}, past_key_values=cache,
                          use_cache=True, output_hidden_states=True)
        finally:
            self.lm.config._attn_implementation = attn
        last = out.last_hidden_state[:, -1]
        logits = self.lm_head(last)
        head_states = torch.stack([out.hidden_states[i][0, -1:] for i in self.layer_ids])
        new_keys = torch.stack([layer.new[0] for layer in cache.layers])
        new_values = torch.stack([layer.new[1] for layer in cache.layers])
        return logits, head_states, new_keys, new_values


class SpeakHeadGraph(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, head_states):
        return self.head(head_states)


# ---- export -----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    files: list[Path]


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: it traces HF modules with custom cache objects as
        # they run; torch.export (dynamo) needs onnxscript and cannot follow the Cache classes.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)


def export_model(thinker, head, out_dir: str | Path, frame_sizes=DEFAULT_FRAME_SIZES, opset: int = DEFAULT_OPSET,
                 fingerprint: str = "", check: bool = True, progress=None, max_pixels: int | None = None,
                 sizing=None) -> ExportResult:
    """Export in-memory modules (float32, CPU) to out_dir; returns the manifest. Camera frame
    sizes are mapped to model frames by `sizing` (the model profile's FrameSizing), by default
    the grid rule with `max_pixels` (the synchronizer's parameter)."""
    import onnx

    from roma_ros.core.profile import FrameSizing
    from roma_ros.core.resize import ROMA_MAX_PIXELS

    if sizing is None:
        sizing = FrameSizing(rule="grid", max_pixels=int(max_pixels or ROMA_MAX_PIXELS))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thinker = thinker.float().cpu().eval()
    use_packed_gqa(thinker.model.language_model)  # the graph attends without repeating the past keys
    head = head.float().cpu().eval()
    cfg = thinker.config
    tcfg = cfg.text_config
    hidden = int(tcfg.hidden_size)
    layers = int(tcfg.num_hidden_layers)
    kv_heads = int(tcfg.num_key_value_heads)
    head_dim = int(getattr(tcfg, "head_dim", None) or hidden // tcfg.num_attention_heads)
    n_mels = int(cfg.audio_config.num_mel_bins)
    vcfg = cfg.vision_config
    patch, tpatch, merge = int(vcfg.patch_size), int(vcfg.temporal_patch_size), int(vcfg.spatial_merge_size)
    say = progress or (lambda text: None)
    files = []
    graphs: dict[str, dict] = {}

    say("embed")
    path = out / "embed.onnx"
    _export(EmbedGraph(thinker), (torch.tensor([1, 2, 3]),), path, ["input_ids"], ["embeds"],
            {"input_ids": {0: "n"}, "embeds": {0: "n"}}, opset)
    graphs["embed"] = {"file": path.name, "inputs": {"input_ids": ["n"]}, "outputs": {"embeds": ["n", hidden]}}
    files.append(path)

    vision = {}
    for h, w in frame_sizes:
        rh, rw = sizing.target_size(int(h), int(w))
        gh, gw = rh // patch, rw // patch
        key = f"{gh}x{gw}"
        if key in vision:
            continue
        say(f"vision {rh}x{rw} (grid {key})")
        path = out / vision_file(gh, gw)
        pixels = torch.randn(gh * gw, 3 * tpatch * patch * patch)
        _export(VisionGraph(thinker, gh, gw), (pixels,), path, ["pixel_values"], ["video_embeds"], {}, opset)
        vision[key] = {"file": path.name, "frame_size": [rh, rw],
                       "inputs": {"pixel_values": [gh * gw, 3 * tpatch * patch * patch]},
                       "outputs": {"video_embeds": [gh * gw // (merge * merge), hidden]}}
        files.append(path)

    say("audio")
    audio = AudioGraph(thinker)
    path = out / "audio.onnx"
    feats = torch.randn(n_mels, AUDIO_FRAMES)
    _export(audio, (feats,), path, ["input_features"], ["audio_embeds"], {}, opset)
    n_audio = int(audio(feats).shape[0])
    graphs["audio"] = {"file": path.name, "inputs": {"input_features": [n_mels, AUDIO_FRAMES]},
                       "outputs": {"audio_embeds": [n_audio, hidden]}}
    files.append(path)

    say("lm_step")
    path = out / "lm_step.onnx"
    n, past = 3, 5  # distinct sizes, so no dimension is folded into another
    key_names, value_names = kv_input_names(layers, kv_heads)
    example = (torch.randn(1, n, hidden), torch.arange(past, past + n).repeat(3, 1)[:, None, :],
               torch.zeros(1, 1, n, past + n), *(torch.randn(past, head_dim) for _ in key_names + value_names))
    dynamic = {"inputs_embeds": {1: "n"}, "position_ids": {2: "n"}, "attention_mask": {2: "n", 3: "total"},
               "new_keys": {3: "n"}, "new_values": {3: "n"}, **{name: {0: "past"} for name in key_names + value_names}}
    _export(LMStepGraph(thinker, head.layer_ids), example, path,
            ["inputs_embeds", "position_ids", "attention_mask", *key_names, *value_names],
            ["logits", "head_states", "new_keys", "new_values"], dynamic, opset)
    graphs["lm_step"] = {
        "file": path.name,
        "inputs": {"inputs_embeds": [1, "n", hidden], "position_ids": [3, 1, "n"],
                   "attention_mask": [1, 1, "n", "past+n"], **{name: ["past", head_dim] for name in key_names + value_names}},
        "outputs": {"logits": [1, int(tcfg.vocab_size)], "head_states": [len(head.layer_ids), 1, hidden],
                    "new_keys": [layers, 1, kv_heads, "n", head_dim], "new_values": [layers, 1, kv_heads, "n", head_dim]},
    }
    files.append(path)

    say("speak_head")
    path = out / "speak_head.onnx"
    _export(SpeakHeadGraph(head), (torch.randn(len(head.layer_ids), 2, hidden),), path, ["head_states"],
            ["probability"], {"head_states": {1: "n"}, "probability": {0: "n"}}, opset)
    graphs["speak_head"] = {"file": path.name, "inputs": {"head_states": [len(head.layer_ids), "n", hidden]},
                            "outputs": {"probability": ["n"]}}
    files.append(path)

    if check:
        for f in files:
            onnx.checker.check_model(str(f))
    import transformers

    manifest = {
        "format": FORMAT_VERSION, "opset": opset, "dtype": "float32", "checkpoint": fingerprint,
        "hidden_size": hidden, "num_layers": layers, "num_kv_heads": kv_heads, "head_dim": head_dim,
        "vocab_size": int(tcfg.vocab_size), "layer_ids": list(head.layer_ids), "head_variant": head.variant,
        "audio_frames": AUDIO_FRAMES, "audio_tokens": n_audio, "n_mels": n_mels,
        "graphs": graphs, "vision": vision,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out, manifest, files)


def export_checkpoint(model_path: str | Path, out_dir: str | Path, frame_sizes=DEFAULT_FRAME_SIZES,
                      opset: int = DEFAULT_OPSET, head_variant: str = "auto", progress=None,
                      max_pixels: int | None = None, model_profile: str = "auto") -> ExportResult:
    """Load a ROMA checkpoint (float32, CPU) and export its graphs; vision graphs for the frame
    sizes the checkpoint's model profile gives the camera sizes `frame_sizes`."""
    from dataclasses import replace

    from roma_ros.engine.checkpoint import load_thinker
    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.speak_head import SpeakHead

    sizing = EngineConfig(model_path=str(model_path), model_profile=model_profile).resolve_profile().frames
    if max_pixels:
        sizing = replace(sizing, max_pixels=int(max_pixels))

    thinker, gate, info = load_thinker(model_path, torch.float32, "cpu", "sdpa")
    head = SpeakHead.from_gate_tensors(gate, thinker.config.text_config.hidden_size, info.gate_layer_ids, head_variant)
    return export_model(thinker, head, out_dir, frame_sizes, opset, checkpoint_fingerprint(model_path),
                        progress=progress, sizing=sizing)


def read_manifest(export_dir: str | Path) -> dict:
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX export at {export_dir} ({MANIFEST} missing): run "
                                f"`roma export MODEL_DIR -o {export_dir}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: export format {manifest.get('format')} is not {FORMAT_VERSION}; re-run roma export")
    return manifest
