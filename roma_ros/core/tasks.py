"""Standing monitoring tasks: instruction text + decision rule, kept by id.

ROMA has ONE speak head: every task sees the same per-unit probability and applies its own rule
(threshold, window, cooldown, mode). The instructions of all tasks are what the engine keeps pinned
in its context (`StreamingModel.set_instructions(task_set.instructions())`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from roma_ros.core.triggers import Trigger, TriggerRule, TriggerState


@dataclass
class Task:
    task_id: str
    instruction: str
    rule: TriggerRule = field(default_factory=TriggerRule)

    def __post_init__(self):
        if not self.task_id:
            raise ValueError("task_id must not be empty")


class TaskSet:
    def __init__(self):
        self._tasks: dict[str, Task] = {}
        self._states: dict[str, TriggerState] = {}

    def set(self, task: Task) -> bool:
        """Add or replace a task; returns True if the instruction text changed (engine update needed)."""
        old = self._tasks.get(task.task_id)
        self._tasks[task.task_id] = task
        if old is None or old.rule != task.rule:
            self._states[task.task_id] = TriggerState(task.rule, task.task_id)
        return old is None or old.instruction != task.instruction

    def clear(self, task_id: str | None = None) -> bool:
        """Remove one task (or all with None); True if anything was removed."""
        if task_id is None:
            had = bool(self._tasks)
            self._tasks.clear()
            self._states.clear()
            return had
        self._states.pop(task_id, None)
        return self._tasks.pop(task_id, None) is not None

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self):
        return iter(list(self._tasks.values()))

    def instructions(self) -> list[str]:
        return [t.instruction for t in self._tasks.values() if t.instruction]

    def update(self, index: int, start_ns: int, end_ns: int, prob: float, restart: bool = False,
               task_probs: dict[str, float] | None = None) -> list[Trigger]:
        """Every task's rule on `prob`, or on its own probability in `task_probs` (task id -> p)."""
        out = []
        own = task_probs or {}
        for tid, st in self._states.items():
            trig = st.update(index, start_ns, end_ns, own.get(tid, prob), restart)
            if trig is not None:
                out.append(trig)
        return out

    def reset(self):
        for st in self._states.values():
            st.reset()
