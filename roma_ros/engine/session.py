"""One stream's worth of ROMA: model + standing tasks + decision rules + queued questions.

The engine node and the offline evaluator both drive a StreamSession, one unit at a time, so
live and offline runs of the same units give the same probabilities, alerts and replies.

Decisions recorded here:
- Every task sees the one speak probability per unit and applies its own rule (core.triggers).
  An `alert` task that fires yields an alert whose text is its instruction, or, with
  `alert_text="generate"`, the first generated segment (the rest follows as replies with
  query_id "alert/<task_id>"). A `narration` task that fires makes the model speak; its text
  arrives as replies with query_id "narration/<task_id>".
- One response at a time: a narration trigger while the model is still answering does not start
  another response (counted in `busy_skips`); the trigger itself is still reported.
- A question stamped t is inserted after the unit that contains t (a zero stamp: after the next
  unit). Questions wait in a bounded queue, in stamp order. A stamp more than `max_query_lead_s`
  ahead of the stream is refused, and a waiting question that falls that far ahead (stamped
  before the first unit, or the stream restarted at an earlier time) expires: neither can hold a
  place in the queue forever. (0, the default, is for offline evaluation, which schedules every
  question of a bag before replaying it.)
- Ids from outside are bounded (`MAX_ID_CHARS`, printable). The prefixes in `RESERVED_ID_PREFIXES`
  belong to the engine (alerts, narrations, ask goals): a question cannot take one, so no
  published question can be mistaken for, or complete, an engine-made response. Two waiting
  questions never share an id.
- A unit with `stream_restart` (time jumped back: bag loop, driver restart) resets the model
  context and every task's decision state; standing tasks and waiting questions stay.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from roma_ros.core.tasks import Task, TaskSet
from roma_ros.core.triggers import Trigger, TriggerRule
from roma_ros.core.unit import Unit
from roma_ros.engine.interface import StreamingModel, TextChunk, UnitResult

ALERT_TEXT_MODES = ("instruction", "generate")
MAX_ID_CHARS = 64
RESERVED_ID_PREFIXES = ("alert/", "narration/", "ask/")


def id_problem(kind: str, value: str, allow_empty: bool = False) -> str | None:
    """Why `value` cannot be a task or question id, or None."""
    if not value:
        return None if allow_empty else f"the {kind} id is empty"
    if len(value) > MAX_ID_CHARS:
        return f"the {kind} id has {len(value)} characters; the limit is {MAX_ID_CHARS}"
    if not value.isprintable() or value != value.strip():
        return f"the {kind} id has control characters or surrounding whitespace"
    return None


class QueryRejected(ValueError):
    """A question the session will not take (empty, too long, queue full)."""


@dataclass
class AlertEvent:
    task_id: str
    instruction: str
    text: str
    probability: float
    unit_index: int
    time_ns: int  # end of the unit that fired
    window_start_ns: int
    mode: str


@dataclass
class StampedChunk:
    chunk: TextChunk
    time_ns: int  # end of the unit after which the text was generated


@dataclass
class SessionStep:
    """What one unit produced."""

    unit_index: int
    start_ns: int
    end_ns: int
    probability: float
    triggers: list[Trigger] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    chunks: list[StampedChunk] = field(default_factory=list)
    result: UnitResult | None = None
    restarted: bool = False
    task_probs: dict[str, float] = field(default_factory=dict)  # task id -> its own head's p (overlay)


class StreamSession:
    def __init__(self, model: StreamingModel, alert_text: str = "instruction",
                 max_query_chars: int = 2000, max_pending_queries: int = 16, max_tasks: int = 32,
                 max_query_lead_s: float = 0.0):
        if alert_text not in ALERT_TEXT_MODES:
            raise ValueError(f"alert_text must be one of {ALERT_TEXT_MODES}, got {alert_text!r}")
        self.model = model
        self.alert_text = alert_text
        self.max_query_chars = max_query_chars
        self.max_pending_queries = max_pending_queries
        self.max_tasks = max_tasks
        self.max_query_lead_ns = int(max_query_lead_s * 1e9)  # 0: questions may be scheduled any time ahead
        self._stream_end_ns = 0  # end of the last unit seen; 0 before the first
        self._expired: list[str] = []  # ids of questions that fell too far ahead, not yet reported
        self.tasks = TaskSet()
        self._pending: list[tuple[int, int, str, str]] = []  # (stamp_ns, seq, query_id, text)
        self._seq = itertools.count()
        self._query_ids = itertools.count(1)
        self._units_seen = 0
        self.busy_skips = 0
        self.restarts = 0

    # Tasks
    def set_task(self, task_id: str, instruction: str, mode: str = "alert", threshold: float = 0.5,
                 window: int = 1, cooldown: float = 0.0) -> None:
        """Add or replace a standing task. ValueError, changing nothing, on a bad rule, an empty
        id, an instruction over `max_query_chars`, more than `max_tasks` tasks, or instructions
        that would not leave room in the context."""
        instruction = instruction.strip()
        if (problem := id_problem("task", task_id)) is not None:
            raise ValueError(problem)
        if len(instruction) > self.max_query_chars:
            raise ValueError(f"the instruction has {len(instruction)} characters; the limit is "
                             f"{self.max_query_chars} (parameter max_query_chars)")
        task = Task(task_id, instruction, TriggerRule(threshold, window, cooldown, mode))
        previous = self.tasks.get(task_id)
        if previous is None and len(self.tasks) >= self.max_tasks:
            raise ValueError(f"{len(self.tasks)} tasks are set; the limit is {self.max_tasks} "
                             f"(parameter max_tasks): clear one first")
        if self.tasks.set(task):
            try:
                self.model.set_instructions(self.tasks.instructions())
            except ValueError:
                if previous is None:
                    self.tasks.clear(task_id)
                else:
                    self.tasks.set(previous)
                raise

    def clear_task(self, task_id: str = "") -> bool:
        """Remove one task, or all with an empty id; False when there was nothing to remove."""
        removed = self.tasks.clear(task_id or None)
        if removed:
            self.model.set_instructions(self.tasks.instructions())
        return removed

    # Questions
    def ask(self, text: str, query_id: str = "", stamp_ns: int = 0, engine_id: bool = False) -> str:
        """Queue a question asked at stream time stamp_ns (0 = now); returns its query id.
        `engine_id`: the id was made by the engine itself and may use a reserved prefix."""
        text = text.strip()
        if (problem := id_problem("question", query_id, allow_empty=True)) is not None:
            raise QueryRejected(problem)
        if not engine_id and query_id.startswith(RESERVED_ID_PREFIXES):
            raise QueryRejected(f"question ids starting with {', '.join(RESERVED_ID_PREFIXES)} are the engine's own")
        if query_id and any(pending[2] == query_id for pending in self._pending):
            raise QueryRejected(f"a question with id {query_id!r} is already waiting")
        if not text:
            raise QueryRejected("the question is empty")
        if len(text) > self.max_query_chars:
            raise QueryRejected(f"the question has {len(text)} characters; the limit is "
                                f"{self.max_query_chars} (parameter max_query_chars)")
        if len(self._pending) >= self.max_pending_queries:
            raise QueryRejected(f"{len(self._pending)} questions are already waiting "
                                f"(parameter max_pending_queries)")
        stamp_ns = max(0, int(stamp_ns))
        if self._too_far_ahead(stamp_ns):
            raise QueryRejected(f"the question is stamped {(stamp_ns - self._stream_end_ns) / 1e9:.1f} s ahead of "
                                f"the stream; the limit is {self.max_query_lead_ns / 1e9:g} s (parameter max_query_lead)")
        query_id = query_id or f"q{next(self._query_ids)}"
        heapq.heappush(self._pending, (stamp_ns, next(self._seq), query_id, text))
        return query_id

    def withdraw(self, query_id: str) -> bool:
        """Drop a question that has not entered the context yet; False if none waits under that id."""
        kept = [pending for pending in self._pending if pending[2] != query_id]
        if len(kept) == len(self._pending):
            return False
        self._pending = kept
        heapq.heapify(self._pending)
        return True

    def _too_far_ahead(self, stamp_ns: int) -> bool:
        return (self.max_query_lead_ns > 0 and self._stream_end_ns > 0
                and stamp_ns - self._stream_end_ns > self.max_query_lead_ns)

    @property
    def pending_queries(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        """Forget the stream (context and decision state); tasks and waiting questions stay."""
        self.model.reset()
        self.tasks.reset()

    # Units
    def process(self, unit: Unit) -> SessionStep:
        step = SessionStep(unit.index, unit.start_ns, unit.end_ns, 0.0)
        if unit.stream_restart and self._units_seen > 0:
            self.reset()
            self.restarts += 1
            step.restarted = True
        self._units_seen += 1
        self._stream_end_ns = unit.end_ns
        self._expire_far_questions()

        result = self.model.ingest(unit)
        step.result = result
        step.probability = result.prob
        if result.task_probs:
            step.task_probs = {task.task_id: result.task_probs[task.instruction] for task in self.tasks
                               if task.instruction in result.task_probs}
        self._add_chunks(step, result.chunks, unit.end_ns)

        for trigger in self.tasks.update(unit.index, unit.start_ns, unit.end_ns, result.prob,
                                         restart=step.restarted, task_probs=step.task_probs):
            step.triggers.append(trigger)
            task = self.tasks.get(trigger.task_id)
            if trigger.mode == "narration":
                self._respond(step, f"narration/{task.task_id}", unit.end_ns)
            else:
                text = task.instruction
                if self.alert_text == "generate":
                    chunks = self._respond(step, f"alert/{task.task_id}", unit.end_ns)
                    text = "".join(c.text for c in chunks) or task.instruction
                step.alerts.append(AlertEvent(task.task_id, task.instruction, text, trigger.prob,
                                              unit.index, trigger.time_ns, trigger.window_start_ns,
                                              trigger.mode))

        # Questions asked up to the end of this unit enter the context after it.
        while self._pending and self._pending[0][0] < unit.end_ns:
            _, _, query_id, text = heapq.heappop(self._pending)
            self.model.ask(text, query_id)
        return step

    def take_expired(self) -> list[str]:
        """Ids of the questions that expired since the last call (stamped too far ahead)."""
        expired, self._expired = self._expired, []
        return expired

    def _expire_far_questions(self) -> None:
        expired = [p for p in self._pending if self._too_far_ahead(p[0])]
        if expired:
            self._expired += [p[2] for p in expired]
            self._pending = [p for p in self._pending if not self._too_far_ahead(p[0])]
            heapq.heapify(self._pending)

    def _respond(self, step: SessionStep, response_id: str, time_ns: int) -> list[TextChunk]:
        if self.model.answering:
            self.busy_skips += 1
            return []
        chunks = self.model.respond(response_id)
        self._add_chunks(step, chunks, time_ns)
        return chunks

    @staticmethod
    def _add_chunks(step: SessionStep, chunks: list[TextChunk], time_ns: int) -> None:
        step.chunks.extend(StampedChunk(c, time_ns) for c in chunks)
