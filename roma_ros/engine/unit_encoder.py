"""Unit -> (inputs_embeds, positions): the Qwen2.5-Omni vision and audio paths, one unit at a time.

Video: the unit's frames (2 at 2 fps, already sized by the synchronizer with the model profile's
frame rule) are normalised with the processor's mean/std (rescale 1/255 then (x - mean) / std,
float32, as the PIL image processor does) and patchified like transformers' Qwen2-VL video
processor (temporal patch 2, patch 14, merge 2; the two frames form ONE temporal grid,
grid_t = 1). A missing second frame repeats the last one (as the released code does); a unit
without frames reuses the previous unit's last frame (or a black frame of `blank_frame_hw` before
any frame was seen). More frames than `frames_per_unit` are subsampled evenly. A frame whose size
is not what the profile's rule gives for the camera size the unit reports (or, when the unit does
not report it, not a fixed point of the rule) is resized to the expected size, and the unit's
result carries an input note saying so: never silently mis-fed. No torchvision anywhere.

Audio: 16 kHz mono, padded/truncated to exactly one second, conditioned as the profile says
(non-finite samples replaced and noted; optional speech gate; digital silence -> the noise bed),
then 128-bin log-mel with WhisperFeatureExtractor's own STFT. mel_padding "reflect" (roma-release)
computes the frames on exactly the second's 16,000 samples, as the released chunked extraction
does (the STFT reflects at the edge). "whisper30s" (roma-tiny) reproduces a zero-padded 30 s
window: Whisper normalises each clip by its maximum, and the padding only appends frames that
never win it, so padding by 800 samples and keeping the first 100 frames is bit-identical to
the 30 s computation (tests/test_engine_parity.py), 100x cheaper.
The noise bed is uniform in [-amplitude, amplitude], drawn for every unit from a generator seeded
with `seed` at each stream start (so a replay is repeatable).

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

from roma_ros.core.profile import TINY, ModelProfile, builtin_profile
from roma_ros.core.resize import release_resize
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
    notes: list[tuple[str, str]] = field(default_factory=list)  # input adaptations (UnitResult.input_notes)


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
                 time_it: bool = False, profile: ModelProfile | None = None, seed: int = 0):
        """`runtime`: a Runtime (runtime.py), or a thinker (run through TorchRuntime).
        `profile`: the model profile (frame rule, audio conditioning); default roma-tiny."""
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
        self.profile = profile or builtin_profile(TINY)
        self.sizing = self.profile.frames
        self.audio_cfg = self.profile.audio
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._gate = None
        if self.audio_cfg.speech_gate:
            from roma_ros.core.speech_gate import SpeechGate

            self._gate = SpeechGate(threshold=self.audio_cfg.speech_threshold)
        self._notes: list[tuple[str, str]] = []
        self.last_audio: np.ndarray | None = None  # the conditioned samples of the latest unit (tests)
        self._last_frame: np.ndarray | None = None
        with torch.no_grad():
            ids = torch.tensor([special.vision_bos, special.audio_bos, special.audio_eos, special.vision_eos], device=dev)
            self._bos_eos = runtime.embed(ids)  # (4, H): vbos, abos, aeos, veos
        self.dtype = self._bos_eos.dtype

    # ---- video --------------------------------------------------------------------------
    def expected_size(self, frame_hw: tuple[int, int], source_hw=(0, 0)) -> tuple[int, int]:
        """The size the profile's rule gives for a frame of `frame_hw` from a camera of `source_hw`."""
        if source_hw and source_hw[0] > 0 and source_hw[1] > 0:
            return self.sizing.target_size(*source_hw)
        return self.sizing.target_size(*frame_hw)

    def _fit(self, frame: np.ndarray, source_hw=(0, 0), rule: str = "") -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be RGB (H, W, 3), got shape {frame.shape}")
        h, w = frame.shape[:2]
        expected = self.expected_size((h, w), source_hw)
        if (h, w) == expected and h % self.factor == 0 and w % self.factor == 0:
            if rule and rule != self.sizing.rule:
                self._notes.append(("frame_rule_mismatch", f"frames sized by the {rule!r} rule, the model profile "
                                    f"{self.profile.name} uses {self.sizing.rule!r} (same size here)"))
            return frame
        from PIL import Image

        source = f" from a {source_hw[1]}x{source_hw[0]} camera" if source_hw and source_hw[0] > 0 else ""
        self._notes.append(("frames_resized", f"frame {w}x{h}{source} resized to {expected[1]}x{expected[0]} for "
                            f"model profile {self.profile.name} ({self.sizing.rule} rule; the synchronizer "
                            f"should use the same model_profile)"))
        if not source and self.sizing.rule == "release":
            return release_resize(frame.astype(np.uint8), self.sizing)
        return np.asarray(Image.fromarray(frame.astype(np.uint8)).resize((expected[1], expected[0]), Image.BICUBIC))

    def select_frames(self, frames: list[np.ndarray], source_hw=(0, 0), rule: str = "") -> list[np.ndarray]:
        n = self.frames_per_unit
        if len(frames) > n:  # pick first, then resize: a unit costs at most n resizes, whatever it holds
            idx = np.round(np.linspace(0, len(frames) - 1, n)).astype(int)
            frames = [frames[i] for i in idx]
        frames = [self._fit(f, source_hw, rule) for f in frames]
        if not frames:
            if self._last_frame is None:
                h, w = self.blank_frame_hw
                self._last_frame = np.zeros((h, w, 3), np.uint8)
            frames = [self._last_frame]
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
    def condition_audio(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """One unit's audio -> exactly one second of 16 kHz float32, conditioned by the profile."""
        a = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            n_out = int(round(len(a) * SAMPLE_RATE / sample_rate))
            a = np.interp(np.linspace(0, len(a) - 1, n_out), np.arange(len(a)), a).astype(np.float32)
        n = SAMPLE_RATE
        a = np.concatenate([a[:n], np.zeros(max(0, n - len(a)), np.float32)])
        bad = ~np.isfinite(a)
        if bad.any():
            self._notes.append(("nonfinite_audio", f"{int(bad.sum())} non-finite audio samples replaced by silence"))
            a[bad] = 0.0
        # PCM lives in [-1, 1]; far larger finite values would overflow the mel power spectrum.
        # Resampler ringing slightly past full scale is normal and only clipped; beyond 1.1 the
        # input was not PCM and the clipping is reported.
        if (loud := np.abs(a) > 1.1).any():
            self._notes.append(("audio_out_of_range", f"{int(loud.sum())} audio samples far outside [-1, 1] clipped"))
        np.clip(a, -1.0, 1.0, out=a)
        cfg = self.audio_cfg
        bed = (self._rng.uniform(-1.0, 1.0, n) * cfg.bed_amplitude).astype(np.float32)
        if self._gate is not None:
            a = self._gate.gate(a, bed).audio
        if cfg.silence == "noise_bed":
            silent = zero_runs(a, cfg.min_zero_run)
            if silent.any():
                a = np.where(silent, bed, a)
        self.last_audio = a
        return a

    def mel(self, a: np.ndarray) -> np.ndarray:
        """Exactly one second of 16 kHz samples -> (n_mels, 100) float32 log-mel."""
        if self.audio_cfg.mel_padding == "reflect":
            feats = self._fbank(a[None], "cpu")[0]
        else:
            feats = self._fbank(np.concatenate([a, np.zeros(AUDIO_PAD, np.float32)])[None], "cpu")[0]
        return feats[:, : self.frames_per_second_audio].astype(np.float32)

    def audio_features(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """One unit's audio -> (n_mels, 100) float32 log-mel."""
        return self.mel(self.condition_audio(audio, sample_rate))

    # ---- unit ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, unit: Unit) -> EncodedUnit:
        """Encode one unit (positions are assigned when it is appended to the context)."""
        timings = {}
        self._notes = []
        t0 = time.perf_counter()
        frames = self.select_frames(list(unit.frames), getattr(unit, "source_hw", (0, 0)), getattr(unit, "frame_rule", ""))
        pixels, grid = self.patchify(frames)
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
                           pixels if self.keep_inputs else None, feats if self.keep_inputs else None, timings,
                           notes=list(dict(self._notes).items()))  # one note per reason and unit

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
        """A new stream: no previous frame, the noise bed and the speech gate start over."""
        self._last_frame = None
        self._rng = np.random.default_rng(self.seed)
        if self._gate is not None:
            self._gate.reset()


def zero_runs(a: np.ndarray, min_run: int) -> np.ndarray:
    """Boolean mask of the samples inside runs of at least `min_run` exact zeros."""
    z = np.concatenate([[0], (a == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(z))
    starts, ends = edges[0::2], edges[1::2]
    long = (ends - starts) >= min_run
    step = np.zeros(len(a) + 1, np.int32)
    np.add.at(step, starts[long], 1)
    np.add.at(step, ends[long], -1)
    return np.cumsum(step[:-1]) > 0
