"""Is the engine making progress? A unit stuck in the model, or units waiting while none
finishes, is a stall (no rclpy: the node reports it on /diagnostics)."""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable


class Watchdog:
    """The limit scales with the model: at least 20 median unit latencies (a large model on a
    small machine is slow, not stuck), and 4x `stall_timeout` before the first unit finished
    (it also warms the backend up: allocations, kernel selection)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.latencies_ms: deque[float] = deque(maxlen=100)
        self.busy_since: float | None = None  # start of the unit being processed
        self.last_progress = clock()  # a unit finished, or the queue was empty

    def idle(self) -> None:
        """Nothing is waiting: not processing is not a stall."""
        self.last_progress = self._clock()

    def started(self) -> None:
        self.busy_since = self._clock()

    def finished(self) -> None:
        self.busy_since = None
        self.last_progress = self._clock()

    def record_latency(self, latency_ms: float) -> None:
        """A processed unit's latency (the limit and the node's status follow their median)."""
        self.latencies_ms.append(latency_ms)

    @property
    def median_latency_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    def stall(self, stall_timeout_s: float, queued: int) -> str:
        """Why units are not being processed, or ""."""
        median = self.median_latency_ms
        limit = max(stall_timeout_s, 20 * median / 1000) if median is not None else 4 * stall_timeout_s
        now = self._clock()
        if self.busy_since is not None and now - self.busy_since > limit:
            return f"one unit has been processing for {now - self.busy_since:.0f} s: the engine is stuck"
        if queued > 0 and now - self.last_progress > limit:
            return f"units are waiting but none was processed for {now - self.last_progress:.0f} s"
        return ""
