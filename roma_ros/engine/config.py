"""Engine configuration: one dataclass; what the checkpoint expects comes from its model profile.

Decisions recorded here:
- The system prompt, the chat scaffolding, frame sizing and audio conditioning are the model
  profile's (roma_ros.core.profile): a built-in (`roma-release`, `roma-tiny`), a
  `roma_profile.json` file, or `auto` (the file beside the checkpoint, else roma-tiny for the
  embedded model, else roma-release with a warning). An explicit `prompt` (tests, benchmarks)
  replaces the profile's scaffolding; `prompt_file` (legacy `roma_prompt.json` format) overlays it.
- Scaffolding strings may contain special tokens (`<|im_start|>` ...); the tokenizer maps them.
- `max_context_tokens` bounds the KV cache (slots preallocated). `position_limit` bounds the rotary
  positions: when the running maximum would pass it, the cached keys are re-based (kv_cache.py).
  0 means "the model's max_position_embeddings minus one unit of headroom".
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from roma_ros.core.profile import (  # noqa: F401 - PromptConfig is part of this module's interface
    AUTO, NEUTRAL_SYSTEM_PROMPT as DEFAULT_SYSTEM_PROMPT, PROMPT_FILE_NAME, ModelProfile, PromptConfig,
    resolve_profile,
)


@dataclass
class EngineConfig:
    """Everything the ROMA engine needs (docs/model.md); all are per-deployment settings."""

    model_path: str = ""  # local directory in Hugging Face format (safetensors only)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "cpu"  # cpu | cuda | cuda:N
    attn_implementation: str = "sdpa"  # sdpa | eager (no flash-attn needed)
    max_context_tokens: int = 8192  # KV-cache slots (prefix + instructions + recent units + answers)
    position_limit: int = 0  # re-base positions before they pass this; 0 = max_position_embeddings - headroom
    head_variant: str = "auto"  # auto | mlp | linear (speak head; auto: mlp if fc1/fc2 keys exist)
    gate_layer_ids: list[int] | None = None  # None: checkpoint config `gate_layer_ids`, else [-4,-3,-2,-1]
    segment_tokens: int = 25  # tokens per generation segment (~1 s of speech)
    max_answer_tokens: int = 512  # hard stop for one response (then it is closed with end_token)
    answer_policy: str = "forced"  # forced (answer at next unit boundary) | gated (speak head decides)
    query_threshold: float = 0.5  # gated policy: answer at the first unit with p >= this
    prompt: PromptConfig | None = None  # explicit scaffolding; None: prompt_file / file beside checkpoint
    prompt_file: str = ""
    model_profile: str = AUTO  # built-in name (roma-release | roma-tiny), a roma_profile.json path, or auto
    speech_gate: str = "profile"  # profile (as the model profile says) | on | off: VAD-gate the audio
    frames_per_unit: int = 2  # 2 fps, one temporal patch (docs/model.md section 2)
    blank_frame_hw: tuple[int, int] = (168, 336)  # used only if a unit has no frame and none came before
    seed: int = 0
    threads: int = 0  # CPU threads (torch intra-op, ONNX Runtime); 0 = auto_threads()
    export_dir: str = ""  # onnxruntime/tensorrt: ONNX graphs from `roma export`; "" = <model_path>/onnx
    tensorrt_precision: str = "fp16"  # fp16 | bf16 | fp32 | int8 (engine precision)
    engine_cache_dir: str = ""  # TensorRT engines; "" = <export_dir>/tensorrt
    speak_head: str = ""  # a speak-head overlay from `roma tune` (engine/head_overlay.py); "" = the checkpoint's

    def torch_dtype(self):
        import torch

        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[self.dtype]
        except KeyError:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}") from None

    def validate(self) -> None:
        if self.head_variant not in ("auto", "mlp", "linear"):
            raise ValueError(f"head_variant must be auto, mlp or linear, got {self.head_variant!r}")
        if self.answer_policy not in ("forced", "gated"):
            raise ValueError(f"answer_policy must be forced or gated, got {self.answer_policy!r}")
        if self.segment_tokens < 1:
            raise ValueError("segment_tokens must be >= 1")
        if self.max_context_tokens < 64:
            raise ValueError("max_context_tokens must be >= 64")
        if self.frames_per_unit < 1:
            raise ValueError("frames_per_unit must be >= 1")
        if self.speech_gate not in ("profile", "on", "off"):
            raise ValueError(f"speech_gate must be profile, on or off, got {self.speech_gate!r}")
        if self.tensorrt_precision not in ("fp16", "bf16", "fp32", "int8"):
            raise ValueError(f"tensorrt_precision must be fp16, bf16, fp32 or int8, got {self.tensorrt_precision!r}")
        self.torch_dtype()

    def resolve_profile(self) -> ModelProfile:
        """The model profile this configuration selects (an explicit `prompt` replaces its scaffolding)."""
        from roma_ros.engine.factory import embedded_model_path

        embedded = bool(self.model_path) and Path(self.model_path).resolve() == embedded_model_path()
        profile = resolve_profile(self.model_profile, self.model_path, self.prompt_file, embedded=embedded)
        if self.speech_gate in ("on", "off"):
            profile.audio = replace(profile.audio, speech_gate=self.speech_gate == "on")
        if self.prompt is not None:
            profile.prompt, profile.prompt_source = self.prompt, "config"
            profile.warnings = [w for w in profile.warnings if "system prompt" not in w]
        return profile

    def resolve_prompt(self) -> tuple[PromptConfig, str]:
        """The scaffolding to use and where it came from ("config", a path, "built-in" or "default")."""
        profile = self.resolve_profile()
        return profile.prompt, profile.prompt_source
