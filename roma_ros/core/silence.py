"""Which inputs have gone silent, judged on a clock that can stall or jump.

A modality is silent after `timeout` of observed time without a message. "Observed" matters: when
the process stalls (CPU starvation, a long GIL hold, a paused debugger), the clock moves on while
messages wait, undelivered, in the middle-ware's queues. Counting the whole stall as silence would
flush units without data that is about to arrive (and executors run timers before subscriptions,
so the check would win that race). So quiet time accrues per check, at most `max_step` per check:
a stall of any length counts as one `max_step`, and silence needs several regular checks in a row
without messages. A clock that goes backwards (a looping bag on sim time) restarts the count.

Timing is the caller's: `arrived()` and `check()` take the clock reading (ns) to use.
"""
from __future__ import annotations

from typing import Iterable


class SilenceDetector:
    def __init__(self, modalities: Iterable[str], timeout_ns: int, max_step_ns: int | None = None):
        if timeout_ns <= 0:
            raise ValueError("timeout_ns must be > 0")
        self.modalities = tuple(modalities)
        self.timeout_ns = int(timeout_ns)
        self.max_step_ns = int(max_step_ns) if max_step_ns is not None else self.timeout_ns // 2
        if self.max_step_ns <= 0:
            raise ValueError("max_step_ns must be > 0")
        self._quiet_ns: dict[str, int] = {}
        self._arrival_ns: dict[str, int] = {}
        self._last_check_ns: int | None = None
        self.stalls = 0  # checks whose gap exceeded max_step (process or clock stalls)

    @property
    def started(self) -> bool:
        """Silence is counted from the first message of any modality."""
        return bool(self._arrival_ns)

    def arrived(self, modality: str, now_ns: int) -> None:
        if not self._arrival_ns:
            self._arrival_ns = {m: now_ns for m in self.modalities}
            self._quiet_ns = {m: 0 for m in self.modalities}
            self._last_check_ns = now_ns
        self._arrival_ns[modality] = now_ns
        self._quiet_ns[modality] = 0

    def quiet_ns(self, modality: str) -> int:
        return self._quiet_ns.get(modality, 0)

    def check(self, now_ns: int) -> list[str]:
        """Update the quiet time at clock reading now_ns; return the modalities that have been
        quiet for at least timeout (every call, until a message arrives)."""
        if not self._arrival_ns:
            return []
        last = self._last_check_ns if self._last_check_ns is not None else now_ns
        self._last_check_ns = now_ns
        if now_ns < last:  # the clock went back: count from now
            self._arrival_ns = {m: now_ns for m in self.modalities}
            self._quiet_ns = {m: 0 for m in self.modalities}
            return []
        gap = now_ns - last
        if gap > self.max_step_ns:
            self.stalls += 1
        step = min(gap, self.max_step_ns)
        silent = []
        for m in self.modalities:
            since_arrival = max(0, now_ns - self._arrival_ns[m])
            self._quiet_ns[m] = min(self._quiet_ns[m] + step, since_arrival)
            if self._quiet_ns[m] >= self.timeout_ns:
                silent.append(m)
        return silent
