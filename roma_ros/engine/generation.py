"""Segmented greedy decoding (docs/model.md section 6).

A response is produced in segments of at most `segment_tokens` tokens (25 ~ one second of
speech). A segment ends when the model emits the end token (`<|im_end|>`: the response is
finished; the resume-user scaffolding follows) or the unfinished marker itself, or when it reaches
`segment_tokens` (the runtime appends the unfinished marker `<|endoftext|>`). An unfinished
response continues after the next unit. A response longer than `max_answer_tokens` is closed with
the end token so one runaway answer can never hold the context forever.

Every token stays in context (it is fed back through the KV cache). The last sampled token of a
segment and the trailer (marker, or end + resume scaffolding) are fed in ONE forward: nothing needs
the logits after them, so a 25-token segment costs 25 forwards.

Decoding is greedy (argmax); an optional `logits_processor(logits, generated_ids) -> logits`
can ban or force tokens (the tests use it to force `<|im_end|>` at a chosen step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

LogitsProcessor = Callable[[torch.Tensor, list[int]], torch.Tensor]


@dataclass
class Response:
    """An answer in progress (or finished)."""

    query_id: str
    gid: int  # cache group holding the query text (if any) and the answer
    tokens: list[int] = field(default_factory=list)  # generated ids (no scaffolding)
    segments: int = 0
    finished: bool = False
    emitted: str = ""  # text already handed out in chunks


@dataclass
class SegmentResult:
    new_tokens: list[int]
    finished: bool  # ended with the end token (or forced closed)
    pending: list[int]  # the last token and what follows it (marker, or end/resume scaffolding), fed in one forward


def decode_segment(first_logits: torch.Tensor, step: Callable[[list[int]], torch.Tensor], *,
                   max_tokens: int, end_id: int, marker_ids: list[int], resume_ids: list[int],
                   generated: list[int], budget: int, logits_processor: LogitsProcessor | None = None
                   ) -> SegmentResult:
    """Greedy-decode one segment.

    first_logits: next-token logits after the context so far (1-D, vocab).
    step(ids): feeds ids through the model, returns the logits after the last one.
    generated: all tokens of this response so far (for the processor and the budget).
    budget: tokens this response may still produce (max_answer_tokens - len(generated)).
    Returns the new tokens; `pending` are the ids the caller must still feed (one forward).
    """
    logits = first_logits
    new: list[int] = []
    marker_set = set(marker_ids) if len(marker_ids) == 1 else set()
    n_max = max(1, min(max_tokens, budget))
    for i in range(n_max):
        if logits_processor is not None:
            logits = logits_processor(logits, generated + new)
        tok = int(torch.argmax(logits))
        new.append(tok)
        if tok == end_id:
            return SegmentResult(new, True, [tok] + list(resume_ids))
        if tok in marker_set:  # the model paused by itself: its marker is already the token
            return SegmentResult(new, False, [tok])
        if i < n_max - 1:
            logits = step([tok])
    if budget <= len(new):  # response budget exhausted: close it
        return SegmentResult(new, True, [new[-1], end_id] + list(resume_ids))
    return SegmentResult(new, False, [new[-1]] + list(marker_ids))


def visible_text(tokenizer, tokens: list[int], skip_ids: set[int]) -> str:
    """Decoded text of a response, without control tokens."""
    return tokenizer.decode([t for t in tokens if t not in skip_ids], skip_special_tokens=False)
