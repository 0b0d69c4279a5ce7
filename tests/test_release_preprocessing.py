"""Fidelity to the released ROMA preprocessing, re-implemented here from its definition.

The reference side of every comparison is written in this file with PIL and the upstream
transformers processors (Qwen2-VL image processor, WhisperFeatureExtractor, Qwen2.5-Omni's
get_rope_index); it never calls roma_ros's resize, audio or position helpers. The roma_ros side
is what the engine really feeds the model: camera images go through the synchronizer's
UnitAssembler and the engine's UnitEncoder under the roma-release profile (docs/model.md
section 5).
"""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine_fixtures import SPECIAL_IDS, make_tokenizer, tiny_head, tiny_thinker
from roma_ros.core.assembler import AssemblerConfig, UnitAssembler
from roma_ros.core.image_decode import RawImage
from roma_ros.core.unit import Unit
from roma_ros.engine.config import EngineConfig
from roma_ros.engine.roma import RomaModel

NS = 1_000_000_000
SR = 16_000
VIDEO_MAX_PIXELS = 256 * 256  # the released video_max_pixels
VIDEO_MIN_PIXELS = 16 * 16
PROCESSOR_SIZE = {"shortest_edge": 3136, "longest_edge": 12845056}  # Qwen2.5-Omni's preprocessor
IM_END = SPECIAL_IDS["<|im_end|>"]
EOT = SPECIAL_IDS["<|endoftext|>"]
SEED = 11


# ---- the reference, from the released definition ----------------------------------------------
def released_frame(image: Image.Image) -> Image.Image:
    """The released per-frame preprocessing before the processor (each step its own PIL resize)."""
    if image.width * image.height > VIDEO_MAX_PIXELS:
        f = math.sqrt(VIDEO_MAX_PIXELS / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if image.width * image.height < VIDEO_MIN_PIXELS:
        f = math.sqrt(VIDEO_MIN_PIXELS / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if min(image.width, image.height) < 28:
        image = image.resize((max(image.width, 28), max(image.height, 28)))
    return image.convert("RGB")


def processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size=dict(PROCESSOR_SIZE))


def reference_video(frames: list[np.ndarray]) -> tuple[np.ndarray, tuple]:
    """Two camera frames -> the processor's video patches and grid (one temporal grid of 2).

    The video processor normalises each frame like the image processor and puts frame k in
    temporal slot k of every patch row; the image processor on one frame fills both slots with
    it, so slot k of frame k's rows is exactly what the video path holds."""
    proc = processor()
    outs = [proc(images=[released_frame(Image.fromarray(f))], return_tensors="np") for f in frames]
    grids = {tuple(int(v) for v in o["image_grid_thw"][0]) for o in outs}
    assert len(grids) == 1
    rows = [o["pixel_values"].reshape(len(o["pixel_values"]), 3, 2, 14, 14) for o in outs]
    video = np.concatenate([rows[0][:, :, :1], rows[1][:, :, 1:]], axis=2).reshape(len(rows[0]), -1)
    return video, grids.pop()


def reference_features(chunk: np.ndarray) -> np.ndarray:
    """The released audio path: each 1-s chunk of the stream through WhisperFeatureExtractor."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=128)
    out = fe([chunk], sampling_rate=SR, padding="max_length", max_length=SR, return_tensors="np")
    return out["input_features"][0]


# ---- roma_ros, as deployed ----------------------------------------------------------------------
def release_engine(**cfg) -> RomaModel:
    cfg.setdefault("model_profile", "roma-release")
    return RomaModel(EngineConfig(seed=SEED, **cfg), tiny_thinker(0), tiny_head(1), make_tokenizer(), trace=True)


def camera_image(h: int, w: int, seed: int) -> np.ndarray:
    """A frame with edges and texture (so resampling differences show)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x // 7 + y // 5) % 2) * 255], -1)
    return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def units_from_camera(frames: list[np.ndarray], audio: np.ndarray) -> list[Unit]:
    """Frames at 2 fps and audio in 100-ms chunks through the synchronizer's assembler."""
    asm = UnitAssembler(AssemblerConfig(frame_rule="release"))
    t0 = 100 * NS  # a sensor clock well past zero
    units = []
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        image = RawImage(h, w, "rgb8", w * 3, rgb.tobytes())
        units += asm.add_frame(t0 + i * NS // 2 + NS // 4, image)
    for k in range(0, len(audio), SR // 10):
        units += asm.add_audio(t0 + k * NS // SR, audio[k:k + SR // 10], SR)
    return units + asm.flush()


CAMERAS = {"16:9": (360, 640), "4:3": (480, 640), "portrait": (640, 480), "tiny": (24, 40), "4K": (2160, 3840)}
EXPECTED_TOKENS = {"16:9": 84, "4:3": 88, "portrait": 88, "tiny": 6, "4K": 84}


@pytest.fixture(scope="module")
def encoder():
    return release_engine().encoder


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_pixel_values_and_grid_equal_the_released_path(camera, encoder):
    h, w = CAMERAS[camera]
    frames = [camera_image(h, w, 1), camera_image(h, w, 2)]
    units = units_from_camera(frames, np.zeros(SR, np.float32))
    assert len(units) == 1 and len(units[0].frames) == 2
    assert units[0].source_hw == (h, w) and units[0].frame_rule == "release"
    enc = encoder.encode(units[0])
    assert enc.notes == []  # the synchronizer sized the frames as the engine's profile expects
    ref, grid = reference_video(frames)
    assert (enc.layout.grid_t, enc.layout.grid_h, enc.layout.grid_w) == grid
    assert grid[1] * grid[2] // 4 == EXPECTED_TOKENS[camera]
    ours = enc.pixel_values.cpu().numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-5


def test_a_mis_sized_unit_is_resized_and_noted(encoder):
    """A unit sized by another rule (a synchronizer left on roma-tiny) is not silently mis-fed."""
    rgb = camera_image(168, 336, 3)  # the grid rule's size for a 640x360 camera
    unit = Unit(index=0, start_ns=0, duration_ns=NS, frames=[rgb, rgb], audio=np.zeros(SR, np.float32),
                source_hw=(360, 640), frame_rule="grid")
    enc = encoder.encode(unit)
    assert [reason for reason, _ in enc.notes] == ["frames_resized"]
    assert (enc.layout.grid_h, enc.layout.grid_w) == (14, 24)  # 336x196: what the profile expects


def test_a_unit_of_many_large_frames_costs_at_most_frames_per_unit_resizes(encoder, monkeypatch):
    """A forged unit of 16 frames of 1568x1568 (sides multiples of 28, so no bound refuses them):
    the frames are picked before they are resized, so it costs 2 resizes, not 16."""
    big = np.zeros((1568, 1568, 3), np.uint8)
    unit = Unit(index=0, start_ns=0, duration_ns=NS, frames=[big] * 16, audio=np.zeros(SR, np.float32))
    fitted = []
    original = type(encoder)._fit

    def counting(self, frame, *args, **kwargs):
        fitted.append(frame.shape)
        return original(self, frame, *args, **kwargs)
    monkeypatch.setattr(type(encoder), "_fit", counting)
    enc = encoder.encode(unit)
    assert len(fitted) == encoder.frames_per_unit == 2
    assert {reason for reason, _ in enc.notes} == {"frames_resized"}
    assert enc.layout.grid_h * enc.layout.grid_w // 4 <= 84


def _speech(n: int) -> np.ndarray:
    """Real speech (clips shipped with the package) with their digital-silence edges trimmed,
    as a microphone delivers it."""
    from importlib.resources import files

    with np.load(files("roma_ros.training") / "assets" / "speech_clips.npz") as clips:
        parts, total = [], 0
        for key in sorted(clips.keys()):
            a = clips[key].astype(np.float32) / 32768.0
            nz = np.flatnonzero(a)
            a = a[nz[0]: nz[-1] + 1]
            parts.append(a)
            total += len(a)
            if total >= n:
                break
    speech = np.concatenate(parts)[:n]
    speech[speech == 0] = 1.0 / 32768.0  # a live microphone never returns runs of exact zeros
    return speech


def test_input_features_equal_the_released_stream():
    """Silence, speech and a partial unit (speech, then the microphone stops)."""
    speech = _speech(SR + 6400)
    # the released stream: a uniform +-1e-4 bed under the whole stream, speech replacing it.
    # The bed's random values are roma_ros's (seeded per stream, one draw of 16,000 per unit).
    rng = np.random.default_rng(SEED)
    stream = np.concatenate([rng.uniform(-1.0, 1.0, SR) * 1e-4 for _ in range(3)]).astype(np.float32)
    stream[SR: 2 * SR] = speech[:SR]
    stream[2 * SR: 2 * SR + 6400] = speech[SR:]
    ref = [reference_features(stream[k * SR:(k + 1) * SR]) for k in range(3)]

    eng = release_engine()
    frame = camera_image(360, 640, 4)
    mic = [np.zeros(SR, np.float32), speech[:SR], speech[SR:]]  # silence: the gap fill's zeros; partial: short
    for k, audio in enumerate(mic):
        unit = Unit(index=k, start_ns=k * NS, duration_ns=NS, frames=[frame, frame], audio=audio)
        enc = eng.encoder.encode(unit)
        ours = enc.input_features.cpu().numpy()
        assert ours.shape == ref[k].shape == (128, 100)
        assert np.abs(ours - ref[k]).max() < 1e-5, f"unit {k}"
    assert ref[0].mean() == pytest.approx(-1.0, abs=0.1)  # the bed, not zeros (about -1.5)


def test_token_ids_and_positions_equal_the_released_stream():
    """A task, a two-segment answer and a question, under roma-release scaffolding."""
    eng = release_engine(max_answer_tokens=40)
    forced_end = 30  # segments of 25: every answer takes two segments

    def processor_(logits, generated):
        logits = logits.clone()
        logits[[IM_END, EOT]] = -1e9
        if len(generated) == forced_end - 1:
            logits[:] = -1e9
            logits[IM_END] = 0.0
        return logits

    eng.logits_processor = processor_
    rng = np.random.default_rng(5)
    frames = [camera_image(360, 640, s) for s in range(12)]
    audio = (rng.standard_normal(6 * SR) * 0.05).astype(np.float32)
    units = units_from_camera(frames, audio)
    assert len(units) == 6
    task, question = "alert me when someone falls", "what is on the table?"
    eng.set_instructions([task])
    chunks = []
    eng.on_text = chunks.append
    eng.ingest(units[0])
    eng.respond("narration")
    eng.ingest(units[1])  # the narration's second segment
    eng.ingest(units[2])
    eng.ask(question, "q1", gated=False)
    for u in units[3:]:
        eng.ingest(u)  # unit 3: the forced answer starts; unit 4: its second segment

    # the released sequence, from its definition
    def enc(text):
        return eng.tokenizer.encode(text, add_special_tokens=False)

    def unit_ids(n_video):
        return ([SPECIAL_IDS["<|vision_bos|>"], SPECIAL_IDS["<|audio_bos|>"]] + [SPECIAL_IDS["<|VIDEO|>"]] * n_video
                + [SPECIAL_IDS["<|AUDIO|>"]] * 25 + [SPECIAL_IDS["<|audio_eos|>"], SPECIAL_IDS["<|vision_eos|>"]])

    answer_turn = enc("<|im_end|>\n<|im_start|>assistant\n")
    user_turn = enc("\n<|im_start|>user\n")
    system = eng.prompt.system_prompt
    log = eng.trace_log
    n_video = 84
    u = unit_ids(n_video)
    assert [(c.query_id, c.segment, c.final) for c in chunks] == [
        ("narration", 0, False), ("narration", 1, True), ("q1", 0, False), ("q1", 1, True)]
    narr1, narr2, ans1, ans2 = (list(c.token_ids) for c in chunks)
    ref_ids = (enc("<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n") + enc(task) + u
               + answer_turn + narr1 + [EOT, IM_END] + user_turn + u + answer_turn + narr2 + user_turn
               + u + enc(question) + u
               + answer_turn + ans1 + [EOT, IM_END] + user_turn + u + answer_turn + ans2 + user_turn + u)
    ours_ids = [int(t) for e in log for t in e["token_ids"]]
    assert narr2[-1] == IM_END and ans2[-1] == IM_END and len(narr1) == len(ans1) == 25
    assert ours_ids == ref_ids

    # 3-D positions: Qwen2.5-Omni's own get_rope_index over the whole released sequence
    grids = [list(e["grid"]) for e in log if e["kind"] == "unit"]
    assert all(g[1] * g[2] // 4 == n_video for g in grids)
    ids_t = torch.tensor(ref_ids)[None]
    ref_pos = eng.thinker.model.get_rope_index(
        ids_t, None, torch.tensor(grids), torch.ones_like(ids_t), True,
        torch.tensor([100] * len(grids)), torch.ones(len(grids)))[0][:, 0].numpy()
    ours_pos = np.concatenate([e["positions"] for e in log], axis=1)
    assert (ours_pos == ref_pos).all()
