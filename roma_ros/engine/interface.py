"""The streaming-model interface the nodes and the offline evaluator program against.

A streaming model is fed one multimodal unit (one second of camera + microphone) at a time and
answers, per unit, "how likely is it that I should speak now" (the speak probability). Text comes
out in chunks (`TextChunk`) that belong to a response: an answer to a text query, or a proactive
answer (narration / alert text) that the caller started with `respond()`.

Contract (every implementation):
- `ingest(unit)` appends the unit to the model's context and returns a `UnitResult`. If a response
  is in progress (an unfinished segment, see docs/model.md section 6) or a query's answer is due at
  this unit boundary, the text generated after the unit comes back in `UnitResult.chunks`.
- `respond(response_id)` starts an answer right after the latest unit (the caller's decision rule
  fired) and returns its first chunk(s). Later segments arrive through `ingest`.
- `ask(text, query_id)` inserts a text question after the latest unit; the answer is produced at
  the next unit boundary (or, speak-head-gated, at the first unit whose probability passes the
  query threshold).
- `set_instructions(texts)` replaces the standing instructions (monitoring tasks); they stay in
  context for the rest of the stream (never evicted).
- `reset()` drops the whole stream context (system prompt kept).
- Optional `on_text` callback receives every chunk as soon as it is produced (streaming replies).

The interface is deliberately small and free of torch types so nodes, the evaluator and fakes in
tests can use it without a model.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from roma_ros.core.unit import Unit


@dataclass
class TextChunk:
    """A piece of a response. `final` marks the last chunk of that response."""

    query_id: str
    text: str
    final: bool
    unit_index: int = -1  # index of the unit after which this text was generated
    token_ids: list[int] = field(default_factory=list)
    segment: int = 0  # 0-based segment number inside the response


@dataclass
class UnitResult:
    """What ingesting one unit produced."""

    index: int  # the unit's index (Unit.index)
    prob: float  # p(speak) from the speak head at the unit's last token
    chunks: list[TextChunk] = field(default_factory=list)
    answering: bool = False  # a response is still unfinished after this unit
    context_tokens: int = 0  # tokens held in the KV cache after this unit (and its text)
    evicted_tokens: int = 0  # tokens evicted while making room for this unit
    rebased: bool = False  # positions were re-based while making room for this unit
    max_position: int = 0  # running maximum rotary position after this unit
    timings_ms: dict[str, float] = field(default_factory=dict)  # vision, audio, prefill, head, decode
    # (reason, message) for every way this unit's input had to be adapted to the model profile
    # (frames resized, non-finite audio replaced): reported on /diagnostics, never silent
    input_notes: list[tuple[str, str]] = field(default_factory=list)
    # instruction -> p(speak) from a tuned head that decides for that instruction (speak_head overlay)
    task_probs: dict[str, float] = field(default_factory=dict)


class UnitRefused(RuntimeError):
    """A unit the model would not take in (it would have poisoned the context); the context is
    as it was before the unit (or, if it could not be repaired, restarted: see `restarted`)."""

    def __init__(self, reason: str, message: str, restarted: bool = False):
        super().__init__(message)
        self.reason = reason
        self.restarted = restarted


TextCallback = Callable[[TextChunk], None]


class StreamingModel(ABC):
    """Abstract streaming model: one unit in, one speak probability out, text on demand."""

    on_text: TextCallback | None = None

    @abstractmethod
    def ingest(self, unit: Unit) -> UnitResult:
        """Append one unit to the context; speak probability plus any text due after it."""

    @abstractmethod
    def respond(self, response_id: str = "") -> list[TextChunk]:
        """Start answering now (after the latest unit); returns the first segment's chunk(s)."""

    @abstractmethod
    def ask(self, text: str, query_id: str = "", gated: bool | None = None) -> None:
        """Insert a text query after the latest unit. `gated=None` uses the configured policy."""

    @abstractmethod
    def set_instructions(self, instructions: list[str]) -> None:
        """Replace the standing instructions (kept in context for the rest of the stream)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the stream (units, answers, queries); the system prompt and instructions stay."""

    @property
    @abstractmethod
    def answering(self) -> bool:
        """True while a response is unfinished (it continues after the next unit)."""

    def stats(self) -> dict:
        """Counters for diagnostics (context size, evictions, ...). Optional."""
        return {}
