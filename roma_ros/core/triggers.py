"""Decision rules: when does a stream of per-unit speak probabilities become a response?

docs/model.md section 7 (dynamic alert rule): fire when `window` consecutive units have p >= threshold;
the trigger time is the END of that window (the end of the last unit). Thresholds and windows differ
per task (PA w=5/0.5, PO w=4/0.2, REC/CRR w=2/0.7, narration w=1/0.97...), so a rule is a per-task
setting. Our additions, decided here:
- `cooldown_s` (stream seconds): after a trigger, no new trigger whose time is earlier than
  last trigger time + cooldown. Units keep being counted during the cooldown, so a condition that
  persists fires again as soon as the cooldown is over.
- After a trigger the run restarts: the next trigger needs `window` fresh consecutive units.
- "Consecutive" means consecutive unit indices: a gap in indices (dropped units) or a stream restart
  resets the run.
- mode "alert" (report the condition; text is the instruction or optional generated text) or
  "narration" (the caller asks the model to speak). The rule itself is the same; the mode travels
  with the trigger so the caller can act on it.
Pure Python, stream time only (nanosecond stamps from the units), no wall clock.
"""
from __future__ import annotations

from dataclasses import dataclass

from roma_ros.core.unit import NS_PER_S as NS

MODES = ("alert", "narration")


@dataclass(frozen=True)
class TriggerRule:
    threshold: float = 0.5
    window: int = 1
    cooldown_s: float = 0.0
    mode: str = "alert"

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1 unit, got {self.window}")
        if not 0 <= self.cooldown_s < float("inf"):  # also refuses NaN
            raise ValueError(f"cooldown_s must be finite and >= 0, got {self.cooldown_s}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class Trigger:
    unit_index: int  # the unit that completed the window
    time_ns: int  # trigger time: end of the window (end of that unit), stream time
    window_start_ns: int  # start of the first unit of the window
    prob: float  # probability of the completing unit
    mode: str
    task_id: str = ""


class TriggerState:
    """Applies one rule to a stream of (unit index, start, end, p)."""

    def __init__(self, rule: TriggerRule, task_id: str = ""):
        self.rule = rule
        self.task_id = task_id
        self.reset()

    def reset(self):
        self._run: list[tuple[int, int, float]] = []  # (index, start_ns, p) of the current run
        self._last_index: int | None = None
        self.last_trigger_ns: int | None = None
        self.count = 0

    def update(self, index: int, start_ns: int, end_ns: int, prob: float, restart: bool = False) -> Trigger | None:
        r = self.rule
        if restart or (self._last_index is not None and index != self._last_index + 1):
            self._run = []
        self._last_index = index
        if prob >= r.threshold:
            self._run.append((index, start_ns, prob))
            if len(self._run) > r.window:
                self._run = self._run[-r.window:]
        else:
            self._run = []
        if len(self._run) < r.window:
            return None
        if self.last_trigger_ns is not None and end_ns < self.last_trigger_ns + int(round(r.cooldown_s * NS)):
            return None
        window = self._run[-r.window:]
        self._run = []
        self.last_trigger_ns = end_ns
        self.count += 1
        return Trigger(index, end_ns, window[0][1], prob, r.mode, self.task_id)
