"""Unit -> (inputs_embeds, positions): the Qwen2.5-Omni vision and audio paths, one unit at a time.

Video: the unit's frames (2 at 2 fps, already resized by roma_ros.core.resize) are normalised with
the processor's mean/std (rescale 1/255 then (x - mean) / std, float32, as the PIL image processor
does) and patchified like transformers' Qwen2-VL video processor (temporal patch 2, patch 14,
merge 2; the two frames form ONE temporal grid, grid_t = 1). A missing second frame repeats the
last one (as the released code does); a unit without frames reuses the previous unit's last frame
(or a black frame of `blank_frame_hw` before any frame was seen). More frames than
`frames_per_unit` are subsampled evenly. Frames whose sides are not multiples of 28 are resized
with the ROMA rule first. No torchvision anywhere.

Audio: 16 kHz mono, padded/truncated to exactly one second, 128-bin log-mel with
WhisperFeatureExtractor. Whisper normalises each clip by its maximum; the reference processor pads
to 30 s, which only appends frames that never win the maximum, so we pad by 800 samples instead
(enough for the frames that straddle the boundary) and keep the first 100 frames: bit-identical to
the 30 s computation (tests/test_engine_parity.py), 100x cheaper.

Towers: the runtime's (runtime.py): `thinker.model.get_video_features` and `get_audio_features`
(the HF modules themselves) on torch, their exported graphs on ONNX Runtime / TensorRT.
The unit's token ids `<|vision_bos|> <|audio_bos|> <|VIDEO|>*n <|AUDIO|>*25 <|audio_eos|>
<|vision_eos|>` come from the checkpoint config; their embeddings come from the LM's embedding
table and the tower outputs replace the placeholder rows in order (HF's masked_scatter).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from roma_ros.core.resize import roma_frame_size
from roma_ros.core.unit import SAMPLE_RATE, Unit
from roma_ros.engine.positions import AEOS, ABOS, AUDIO, VBOS, VEOS, VIDEO, UnitLayout, unit_positions

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_PAD = 800  # samples of zeros appended before the STFT (see module docstring)


@dataclass
class SpecialIds:
    """Token ids the runtime needs (multimodal ids from the model config, chat ids from the tokenizer)."""

    vision_bos: int
    vision_eos: int
    audio_bos: int
    audio_eos: int
    video: int
    audio: int
    im_start: int | None = None
    im_end: int | None = None
    endoftext: int | None = None

    @classmethod
    def from_config(cls, cfg, tokenizer=None) -> "SpecialIds":
        def need(name, *alts):
            for n in (name, *alts):
                v = getattr(cfg, n, None)
                if v is not None:
                    return int(v)
            raise ValueError(f"checkpoint config has no {name}: cannot lay out a ROMA unit")

        ids = cls(
            vision_bos=need("vision_start_token_id"), vision_eos=need("vision_end_token_id"),
            audio_bos=need("audio_start_token_id"), audio_eos=need("audio_end_token_id"),
            video=need("video_token_id", "video_token_index"), audio=need("audio_token_id", "audio_token_index"),
        )
        if tokenizer is not None:
            def tok(t):
                i = tokenizer.convert_tokens_to_ids(t)
                return None if i is None or i == tokenizer.unk_token_id else int(i)
            ids.im_start, ids.im_end, ids.endoftext = tok("<|im_start|>"), tok("<|im_end|>"), tok("<|endoftext|>")
        return ids


@dataclass
class EncodedUnit:
    embeds: torch.Tensor  # (1, n, H) in the model dtype
    token_ids: np.ndarray  # (n,) placeholder ids (for reference forwards and the tests)
    layout: UnitLayout  # positions: positions.unit_positions(running max + 1, layout)
    pixel_values: torch.Tensor | None = None  # kept only with keep_inputs=True (tests)
    input_features: torch.Tensor | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


def read_preprocessor_config(model_path: str | Path | None) -> dict:
    if not model_path:
        return {}
    p = Path(model_path) / "preprocessor_config.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class UnitEncoder:
    """Encodes units for one thinker. Holds the feature extractor and constants; no per-unit setup."""

    def __init__(self, runtime, special: SpecialIds, preprocessor: dict | None = None,
                 frames_per_unit: int = 2, blank_frame_hw=(168, 336), keep_inputs: bool = False,
                 time_it: bool = False):
        """`runtime`: a Runtime (runtime.py), or a thinker (run through TorchRuntime)."""
        from transformers import WhisperFeatureExtractor

        from roma_ros.engine.runtime import Runtime, TorchRuntime

        if not isinstance(runtime, Runtime):
            runtime = TorchRuntime(runtime)
        pre = preprocessor or {}
        self.runtime = runtime
        thinker_config = runtime.config
        self.special = special
        vcfg = thinker_config.vision_config
        self.patch = int(vcfg.patch_size)
        self.tpatch = int(vcfg.temporal_patch_size)
        self.merge = int(vcfg.spatial_merge_size)
        self.factor = self.patch * self.merge
        self.frames_per_unit = frames_per_unit
        self.blank_frame_hw = tuple(blank_frame_hw)
        self.position_id_per_seconds = int(getattr(thinker_config, "position_id_per_seconds", 25))
        self.seconds_per_chunk = float(getattr(thinker_config, "seconds_per_chunk", 2))
        fps = frames_per_unit  # frames per 1-second unit
        self.second_per_grid = self.tpatch / fps
        mean = pre.get("image_mean", CLIP_MEAN)
        std = pre.get("image_std", CLIP_STD)
        self.rescale = float(pre.get("rescale_factor", 1 / 255))
        dev = runtime.device
        self.device = dev
        self.mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self.n_mels = int(thinker_config.audio_config.num_mel_bins)
        self.fe = WhisperFeatureExtractor(
            feature_size=self.n_mels, sampling_rate=SAMPLE_RATE,
            hop_length=int(pre.get("hop_length", 160)), n_fft=int(pre.get("n_fft", 400)),
        )
        self.frames_per_second_audio = SAMPLE_RATE // self.fe.hop_length  # 100 mel frames per second
        # the same function WhisperFeatureExtractor.__call__ uses (torch STFT when torch is present)
        self._fbank = getattr(self.fe, "_torch_extract_fbank_features", None) or self.fe._np_extract_fbank_features
        self.keep_inputs = keep_inputs
        self.time_it = time_it
        self._last_frame: np.ndarray | None = None
        with torch.no_grad():
            ids = torch.tensor([special.vision_bos, special.audio_bos, special.audio_eos, special.vision_eos], device=dev)
            self._bos_eos = runtime.embed(ids)  # (4, H): vbos, abos, aeos, veos
        self.dtype = self._bos_eos.dtype

    # ---- video --------------------------------------------------------------------------
    def _fit(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be RGB (H, W, 3), got shape {frame.shape}")
        h, w = frame.shape[:2]
        if h % self.factor or w % self.factor:
            from PIL import Image

            nh, nw = roma_frame_size(h, w)
            frame = np.asarray(Image.fromarray(frame.astype(np.uint8)).resize((nw, nh), Image.BICUBIC))
        return frame

    def select_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        frames = [self._fit(f) for f in frames]
        if not frames:
            if self._last_frame is None:
                h, w = self.blank_frame_hw
                self._last_frame = np.zeros((h, w, 3), np.uint8)
            frames = [self._last_frame]
        n = self.frames_per_unit
        if len(frames) > n:
            idx = np.round(np.linspace(0, len(frames) - 1, n)).astype(int)
            frames = [frames[i] for i in idx]
        shape = frames[0].shape
        if any(f.shape != shape for f in frames):
            from PIL import Image

            frames = [f if f.shape == shape else np.asarray(Image.fromarray(f).resize((shape[1], shape[0]), Image.BICUBIC))
                      for f in frames]
        while len(frames) < n:
            frames.append(frames[-1])
        self._last_frame = frames[-1]
        return frames

    def patchify(self, frames: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Frames (T of H x W x 3 uint8) -> (grid_t*grid_h*grid_w, 3*tp*p*p) float32, grid (t, h, w)."""
        x = torch.from_numpy(np.stack(frames)).to(self.device)  # (T, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).to(torch.float32)  # (T, 3, H, W)
        x = (x * self.rescale - self.mean) / self.std
        t, c, h, w = x.shape
        tp, p, m = self.tpatch, self.patch, self.merge
        if pad := -t % tp:
            x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
            t += pad
        gt, gh, gw = t // tp, h // p, w // p
        x = x.view(gt, tp, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(gt * gh * gw, c * tp * p * p), (gt, gh, gw)

    # ---- audio --------------------------------------------------------------------------
    def audio_features(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """One second of audio -> (n_mels, 100) float32 log-mel."""
        a = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            n_out = int(round(len(a) * SAMPLE_RATE / sample_rate))
            a = np.interp(np.linspace(0, len(a) - 1, n_out), np.arange(len(a)), a).astype(np.float32)
        n = SAMPLE_RATE
        if len(a) < n:
            a = np.concatenate([a, np.zeros(n - len(a), np.float32)])
        a = np.concatenate([a[:n], np.zeros(AUDIO_PAD, np.float32)])
        feats = self._fbank(a[None], "cpu")[0]
        return feats[:, : self.frames_per_second_audio].astype(np.float32)

    # ---- unit ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, unit: Unit) -> EncodedUnit:
        """Encode one unit (positions are assigned when it is appended to the context)."""
        timings = {}
        t0 = time.perf_counter()
        pixels, grid = self.patchify(self.select_frames(list(unit.frames)))
        video = self.runtime.video_features(pixels, grid)
        if self.time_it:
            _sync(self.device)
        t1 = time.perf_counter()
        feats = torch.from_numpy(self.audio_features(unit.audio, unit.sample_rate)).to(self.device)
        audio = self.runtime.audio_features(feats)
        if self.time_it:
            _sync(self.device)
        t2 = time.perf_counter()
        timings["vision"] = (t1 - t0) * 1e3
        timings["audio"] = (t2 - t1) * 1e3
        layout = UnitLayout(grid[0], grid[1], grid[2], int(audio.shape[0]), self.merge, self.second_per_grid,
                            self.position_id_per_seconds, self.seconds_per_chunk)
        _, kinds, _ = unit_positions(0, layout)
        embeds = self.assemble(kinds, video.to(self.dtype), audio.to(self.dtype))
        sp = self.special
        id_of = np.array([sp.vision_bos, sp.audio_bos, sp.video, sp.audio, sp.audio_eos, sp.vision_eos], np.int64)
        return EncodedUnit(embeds[None], id_of[kinds], layout,
                           pixels if self.keep_inputs else None, feats if self.keep_inputs else None, timings)

    def assemble(self, kinds: np.ndarray, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Embeddings in layout order: special rows from the embedding table, towers in order."""
        kinds_t = torch.from_numpy(kinds.astype(np.int64)).to(self.device)
        out = torch.empty(len(kinds), self._bos_eos.shape[1], dtype=self.dtype, device=self.device)
        out[kinds_t == VIDEO] = video
        out[kinds_t == AUDIO] = audio
        for k, row in ((VBOS, 0), (ABOS, 1), (AEOS, 2), (VEOS, 3)):
            out[kinds_t == k] = self._bos_eos[row]
        return out

    def reset(self):
        self._last_frame = None
