"""Engine configuration: one dataclass, plus the prompt/scaffolding file read beside a checkpoint.

Decisions recorded here:
- The system prompt and the chat scaffolding are configuration, never code: a real checkpoint needs
  the prompt it was trained with. They come from (first match wins) the explicit `prompt` fields of
  `EngineConfig`, a `prompt_file` path, or `roma_prompt.json` beside the checkpoint. If none exists,
  a neutral default prompt is used and `RomaModel` logs a warning.
- Scaffolding strings may contain special tokens (`<|im_start|>` ...); the tokenizer maps them.
- `max_context_tokens` bounds the KV cache (slots preallocated). `position_limit` bounds the rotary
  positions: when the running maximum would pass it, the cached keys are re-based (kv_cache.py).
  0 means "the model's max_position_embeddings minus one unit of headroom".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

PROMPT_FILE_NAME = "roma_prompt.json"

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant watching a live video and audio stream, one second at a time. "
    "Speak only when it is useful: describe important changes in the scene, answer questions, "
    "and alert when an instructed condition holds."
)


@dataclass
class PromptConfig:
    """Chat scaffolding around the stream (ROMA_SPEC section 4). `{system}` etc. are filled in."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
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
    # Appended after the next unit before an unfinished answer continues (empty in ROMA).
    continue_prefix: str = ""
    # The token that ends an answer.
    end_token: str = "<|im_end|>"

    @classmethod
    def from_dict(cls, data: dict) -> "PromptConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown prompt keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "PromptConfig":
        """JSON file with any subset of the fields; `system_prompt_file` may point to a text file."""
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if "system_prompt_file" in data:
            data["system_prompt"] = (path.parent / data.pop("system_prompt_file")).read_text(encoding="utf-8")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EngineConfig:
    """Everything the ROMA engine needs. Defaults follow ROMA_SPEC; all are per-deployment settings."""

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
    frames_per_unit: int = 2  # 2 fps, one temporal patch (ROMA_SPEC section 2)
    blank_frame_hw: tuple[int, int] = (168, 336)  # used only if a unit has no frame and none came before
    seed: int = 0
    export_dir: str = ""  # onnxruntime/tensorrt: ONNX graphs from `roma export`; "" = <model_path>/onnx
    tensorrt_precision: str = "fp16"  # fp16 | bf16 | fp32 | int8 (engine precision)
    engine_cache_dir: str = ""  # TensorRT engines; "" = <export_dir>/tensorrt
    extra: dict = field(default_factory=dict)

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
        if self.tensorrt_precision not in ("fp16", "bf16", "fp32", "int8"):
            raise ValueError(f"tensorrt_precision must be fp16, bf16, fp32 or int8, got {self.tensorrt_precision!r}")
        self.torch_dtype()

    def resolve_prompt(self) -> tuple[PromptConfig, str]:
        """The scaffolding to use and where it came from ("config", a path, or "default")."""
        if self.prompt is not None:
            return self.prompt, "config"
        if self.prompt_file:
            return PromptConfig.from_file(self.prompt_file), self.prompt_file
        if self.model_path:
            beside = Path(self.model_path) / PROMPT_FILE_NAME
            if beside.is_file():
                return PromptConfig.from_file(beside), str(beside)
        return PromptConfig(), "default"
