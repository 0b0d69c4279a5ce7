"""Events in the last `window_s` seconds of a monotonic clock (rate limits without rclpy)."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable


class SlidingWindow:
    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def count(self) -> int:
        """Events recorded within the last window_s seconds."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        return len(self._times)

    def record(self) -> None:
        self._times.append(self._clock())
