"""Model profiles: everything a checkpoint expects about its input, in one place (no torch, no rclpy).

A profile fixes how frames are sized, how audio is conditioned (silence fill, mel padding,
optional speech gating) and every scaffolding string around the stream (system prompt,
instruction and question placement, answer continuation). The synchronizer and the engine read
the same profile, so units carry the frame sizes the model was trained on.

Built-ins (docs/model.md section 5):
- `roma-release`: the behaviour of the authors' released ROMA code. Their system prompt is not
  shipped with roma_ros: `roma profile import` extracts it from a local clone of their repository
  into `roma_profile.json` beside the checkpoint.
- `roma-tiny`: what the embedded ROMA-tiny was trained with.

A profile file is JSON: `{"name": ..., "base": <built-in>, "frames": {...}, "audio": {...},
"prompt": {...}}`; every section and field is optional and overrides the base. The older
`roma_prompt.json` (prompt fields only) is still read beside a checkpoint.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

PROFILE_FILE_NAME = "roma_profile.json"
PROMPT_FILE_NAME = "roma_prompt.json"
AUTO = "auto"
RELEASE = "roma-release"
TINY = "roma-tiny"

PATCH_FACTOR = 28  # 14-px ViT patches merged 2x2
MAX_ASPECT = 200

NEUTRAL_SYSTEM_PROMPT = (
    "You are a helpful assistant watching a live video and audio stream, one second at a time. "
    "Speak only when it is useful: describe important changes in the scene, answer questions, "
    "and alert when an instructed condition holds."
)
TINY_SYSTEM_PROMPT = (
    "You are ROMA-tiny, watching a live camera and microphone one second at a time. "
    "Answer questions briefly. Speak when an instructed condition holds or when asked."
)


class ProfileError(ValueError):
    """A profile that cannot be used (unknown name, bad file, bad field)."""


def _from_dict(cls, data: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return data


# ---- frames -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSizing:
    """How a camera frame of any size becomes a model frame.

    rule "release": two steps, as the released code does them. (1) PIL-resize (bicubic) by
    sqrt(max_pixels / area) when the frame is larger, new sides truncated to integers (and up
    to `min_pixels` likewise; a side under 28 px becomes 28); (2) the Qwen2.5 processor rounds each
    side to the NEAREST multiple of 28 within [processor_min_pixels, processor_max_pixels] and
    resizes again (bicubic). 640x360 -> 341x192 -> 336x196. The area may end above max_pixels.
    rule "grid": one step straight to sides that are multiples of 28 with area <= max_pixels
    (area-averaged); 640x360 -> 336x168.
    """

    rule: str = "grid"
    max_pixels: int = 65_536
    min_pixels: int = 256
    processor_min_pixels: int = 3_136
    processor_max_pixels: int = 12_845_056

    def validate(self) -> "FrameSizing":
        if self.rule not in ("release", "grid"):
            raise ProfileError(f"frames.rule must be 'release' or 'grid', got {self.rule!r}")
        if self.max_pixels < 4 * PATCH_FACTOR * PATCH_FACTOR:
            raise ProfileError(f"frames.max_pixels {self.max_pixels} is below one 56x56 frame")
        return self

    def steps(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (height, width) of each resize a frame goes through, last = the model frame."""
        if height <= 0 or width <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if max(height, width) / min(height, width) > MAX_ASPECT:
            raise ValueError(f"aspect ratio of {width}x{height} is over {MAX_ASPECT}")
        if self.rule == "grid":
            return [grid_frame_size(height, width, self.max_pixels)]
        shrink = release_shrink_steps(height, width, self.max_pixels, self.min_pixels)
        h, w = shrink[-1] if shrink else (height, width)
        final = qwen_smart_resize(h, w, PATCH_FACTOR, self.processor_min_pixels, self.processor_max_pixels)
        return shrink + [final]

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return self.steps(height, width)[-1]


def grid_frame_size(height: int, width: int, max_pixels: int = 65_536, factor: int = PATCH_FACTOR,
                    min_pixels: int = 4 * PATCH_FACTOR * PATCH_FACTOR) -> tuple[int, int]:
    """One step to sides that are multiples of `factor`, area in [min_pixels, max_pixels]."""
    return qwen_smart_resize(height, width, factor, min_pixels, max_pixels, min_side=factor)


def release_shrink_steps(height: int, width: int, max_pixels: int, min_pixels: int) -> list[tuple[int, int]]:
    """The released code's own resizes before the processor, each a separate PIL resize: down to
    `max_pixels`, up to `min_pixels` (sides truncated to integers, not rounded), then any side
    under 28 px raised to 28. Returns the (height, width) after each resize that happens."""
    steps = []
    if width * height > max_pixels:
        f = math.sqrt(max_pixels / (width * height))
        width, height = int(width * f), int(height * f)
        steps.append((height, width))
    if width * height < min_pixels:
        f = math.sqrt(min_pixels / (width * height))
        width, height = int(width * f), int(height * f)
        steps.append((height, width))
    if min(width, height) < PATCH_FACTOR:
        width, height = max(width, PATCH_FACTOR), max(height, PATCH_FACTOR)
        steps.append((height, width))
    return steps


def qwen_smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int,
                      min_side: int = 0) -> tuple[int, int]:
    """The Qwen2-VL processor's sizing: each side to the nearest multiple of `factor` (at least
    `min_side`), scaled down or up when the area leaves [min_pixels, max_pixels]."""
    h = max(min_side, round(height / factor) * factor)
    w = max(min_side, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


# ---- audio ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioConditioning:
    """What the audio channel looks like before the mel features.

    silence "noise_bed": runs of digital silence (exact zeros of at least `min_zero_run`
    samples: the synchronizer's gap fill, a muted source, the end of a stream) become uniform
    noise of amplitude `bed_amplitude`, the near-silent bed the released model heard; "zeros"
    leaves them. mel_padding "reflect": the mel frames of each second are computed on exactly
    its samples (the STFT reflects at the edge, as the released chunked extraction does);
    "whisper30s": as inside a zero-padded 30-s Whisper window. speech_gate: a voice-activity
    detector keeps speech and replaces every other sample with the bed.
    """

    silence: str = "zeros"
    bed_amplitude: float = 1e-4
    min_zero_run: int = 160  # 10 ms at 16 kHz: shorter zero runs occur inside real signals
    mel_padding: str = "whisper30s"
    speech_gate: bool = False
    speech_threshold: float = 0.5

    def validate(self) -> "AudioConditioning":
        if self.silence not in ("zeros", "noise_bed"):
            raise ProfileError(f"audio.silence must be 'zeros' or 'noise_bed', got {self.silence!r}")
        if self.mel_padding not in ("reflect", "whisper30s"):
            raise ProfileError(f"audio.mel_padding must be 'reflect' or 'whisper30s', got {self.mel_padding!r}")
        if not (0.0 <= self.bed_amplitude < 0.1) or not math.isfinite(self.bed_amplitude):
            raise ProfileError(f"audio.bed_amplitude must be in [0, 0.1), got {self.bed_amplitude}")
        if self.min_zero_run < 1:
            raise ProfileError("audio.min_zero_run must be >= 1")
        if not 0.0 < self.speech_threshold < 1.0:
            raise ProfileError("audio.speech_threshold must be in (0, 1)")
        return self


# ---- prompt and scaffolding -------------------------------------------------------------------
@dataclass
class PromptConfig:
    """Chat scaffolding around the stream (docs/model.md section 5). `{system}` etc. are filled in."""

    system_prompt: str = NEUTRAL_SYSTEM_PROMPT
    # Tokens before the first unit: the system turn, then the user turn that holds the stream.
    prefix_template: str = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
    # A standing instruction (monitoring task), inserted as text inside the user turn.
    instruction_template: str = "{instruction}\n"
    # A reactive text query, inserted after the unit at which it was asked.
    query_template: str = "{query}\n"
    # Appended when the model starts to speak (ends the user turn, opens the assistant turn).
    assistant_prefix: str = "<|im_end|>\n<|im_start|>assistant\n"
    # Appended after a finished answer (after its <|im_end|>): streaming resumes in a user turn.
    resume_user: str = "\n<|im_start|>user\n"
    # Marks a segment that ended without <|im_end|>; the answer continues after the next unit.
    unfinished_marker: str = "<|endoftext|>"
    # Appended after the marker: closes the assistant turn before the next unit (roma-release).
    unfinished_close: str = ""
    # Appended after the next unit before an unfinished answer continues.
    continue_prefix: str = ""
    # The token that ends an answer.
    end_token: str = "<|im_end|>"

    @classmethod
    def from_dict(cls, data: dict) -> "PromptConfig":
        return cls(**_from_dict(cls, data, "prompt"))

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptConfig":
        """JSON file with any subset of the fields; `system_prompt_file` may point to a text file."""
        path = Path(path)
        return replace(cls(), **_prompt_fields(_read_json(path), path.parent))

    def to_dict(self) -> dict:
        return asdict(self)


def _prompt_fields(data: dict, base_dir: Path) -> dict:
    data = dict(data)
    if "system_prompt_file" in data:
        data["system_prompt"] = (base_dir / data.pop("system_prompt_file")).read_text(encoding="utf-8")
    return _from_dict(PromptConfig, data, "prompt")


# ---- profiles ---------------------------------------------------------------------------------
@dataclass
class ModelProfile:
    name: str
    frames: FrameSizing = field(default_factory=FrameSizing)
    audio: AudioConditioning = field(default_factory=AudioConditioning)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    source: str = "built-in"  # where the profile came from (a built-in or a file)
    prompt_source: str = "built-in"  # where the prompt came from; "default" = the neutral prompt
    warnings: list[str] = field(default_factory=list)

    def validate(self) -> "ModelProfile":
        self.frames.validate()
        self.audio.validate()
        return self

    def describe(self) -> str:
        a = self.audio
        gate = ", speech gate" if a.speech_gate else ""
        return (f"model profile {self.name} ({self.source}): frames {self.frames.rule} "
                f"<= {self.frames.max_pixels} px, silence {a.silence}, mel padding {a.mel_padding}{gate}, "
                f"prompt from {self.prompt_source}")

    def to_dict(self) -> dict:
        return {"name": self.name, "frames": asdict(self.frames), "audio": asdict(self.audio),
                "prompt": self.prompt.to_dict()}


def _release() -> ModelProfile:
    return ModelProfile(
        RELEASE,
        FrameSizing(rule="release"),
        AudioConditioning(silence="noise_bed", mel_padding="reflect"),
        PromptConfig(instruction_template="{instruction}", query_template="{query}",
                     unfinished_close="<|im_end|>\n<|im_start|>user\n",
                     continue_prefix="<|im_end|>\n<|im_start|>assistant\n"),
        prompt_source="default",  # the authors' prompt is not shipped: see `roma profile import`
    )


def _tiny() -> ModelProfile:
    return ModelProfile(TINY, FrameSizing(rule="grid"), AudioConditioning(),
                        PromptConfig(system_prompt=TINY_SYSTEM_PROMPT))


BUILTINS = {RELEASE: _release, TINY: _tiny}


def builtin_profile(name: str) -> ModelProfile:
    try:
        return BUILTINS[name]().validate()
    except KeyError:
        raise ProfileError(f"unknown model profile {name!r}: use {', '.join(BUILTINS)}, {AUTO!r}, "
                           f"or the path of a {PROFILE_FILE_NAME} file") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read profile file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile file holds a JSON object")
    return data


def profile_from_file(path: str | Path) -> ModelProfile:
    """A profile file: its `base` built-in (default roma-release) with its sections on top."""
    path = Path(path)
    data = _read_json(path)
    unknown = set(data) - {"name", "base", "frames", "audio", "prompt", "source"}
    if unknown:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)}; known: base, name, frames, audio, prompt, source")
    base = builtin_profile(str(data.get("base", RELEASE)))
    try:
        frames = replace(base.frames, **_from_dict(FrameSizing, data.get("frames", {}), f"{path}: frames"))
        audio = replace(base.audio, **_from_dict(AudioConditioning, data.get("audio", {}), f"{path}: audio"))
        prompt_data = _prompt_fields(data.get("prompt", {}), path.parent)
    except (TypeError, OSError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    prompt = replace(base.prompt, **prompt_data)
    has_system = "system_prompt" in prompt_data
    profile = ModelProfile(str(data.get("name", path.stem)), frames, audio, prompt, source=str(path),
                           prompt_source=str(path) if has_system else base.prompt_source)
    return profile.validate()


def resolve_profile(spec: str = AUTO, model_path: str = "", prompt_file: str = "",
                    embedded: bool = False) -> ModelProfile:
    """The profile `spec` names: a built-in, a file, or `auto`.

    auto: `roma_profile.json` beside the checkpoint; else roma-tiny for the embedded model; else
    roma-release with a warning naming the choices. A legacy `roma_prompt.json` beside the
    checkpoint (or an explicit `prompt_file`) overlays the prompt unless the profile file set
    the system prompt itself. A profile whose system prompt is still the neutral default carries
    a warning: a trained checkpoint has most likely never seen it.
    """
    spec = (spec or AUTO).strip()
    beside = Path(model_path) if model_path else None
    warnings: list[str] = []
    if spec == AUTO:
        if beside is not None and (beside / PROFILE_FILE_NAME).is_file():
            profile = profile_from_file(beside / PROFILE_FILE_NAME)
        elif embedded:
            profile = builtin_profile(TINY)
        else:
            profile = builtin_profile(RELEASE)
            warnings.append(
                f"no {PROFILE_FILE_NAME} beside the checkpoint {model_path or '(none)'}: using the built-in "
                f"{RELEASE} profile. Choose explicitly with model_profile: {RELEASE} | {TINY} | <path to a "
                f"{PROFILE_FILE_NAME}>; `roma profile import <clone of the ROMA repository> --checkpoint "
                f"{model_path or 'DIR'}` writes the released prompt beside it")
    elif spec in BUILTINS:
        profile = builtin_profile(spec)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ProfileError(f"model_profile {spec!r} is neither a built-in ({', '.join(BUILTINS)}, {AUTO}) "
                               f"nor a profile file")
        profile = profile_from_file(path)
    overlay = Path(prompt_file) if prompt_file else (beside / PROMPT_FILE_NAME if beside is not None else None)
    if overlay is not None and overlay.is_file() and profile.prompt_source in ("built-in", "default"):
        profile.prompt = replace(profile.prompt, **_prompt_fields(_read_json(overlay), overlay.parent))
        profile.prompt_source = str(overlay)
    elif prompt_file and not Path(prompt_file).is_file():
        raise ProfileError(f"prompt_file {prompt_file!r} does not exist")
    if profile.prompt.system_prompt == NEUTRAL_SYSTEM_PROMPT:
        profile.prompt_source = "default"
        warnings.append(f"profile {profile.name} has no system prompt: using roma_ros's neutral default, which "
                        f"a trained checkpoint has most likely never seen")
    profile.warnings = warnings
    return profile
