"""Counters, rates and rate-limited error logging for a node, published on /diagnostics (~1 Hz).

Reusable by every roma_ros node:

    diag = DiagnosticsReporter(node, "synchronizer", status=my_status_fn)
    diag.count("frames_in")             # counters (reported as totals)
    diag.track_rate("frames_in", "image_rate_hz")  # and/or as per-second rates
    diag.set("last_coverage", 0.98)     # plain values
    diag.error("truncated", "image data has 10 bytes ...")  # counted + logged, rate-limited

Log throttling is per reason: the first occurrence is logged at once, later ones at most once
per `log_interval` with the number suppressed meanwhile (rclpy's own throttle_duration_sec
throttles per call site, which would let one noisy reason hide another).

The publish timer runs on the steady clock, so diagnostics keep flowing while a simulated clock
(use_sim_time) is paused; the message stamp is the node's clock.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

from roma_ros.core.log_text import loggable

try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - older rclpy
    RCLError = RuntimeError

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)
ERROR_PREFIX = "errors."


class DiagnosticsReporter:
    """One DiagnosticStatus named "<namespace/node name>: <name>" with counters, rates and values."""

    def __init__(
        self,
        node,
        name: str,
        status: Callable[["DiagnosticsReporter"], tuple[bytes, str]] | None = None,
        period: float = 1.0,
        log_interval: float = 5.0,
        hardware_id: str = "",
    ):
        self.node = node
        # Namespace included ("robot1/roma/synchronizer: sensor sync"; just the node name in the
        # root namespace), so nodes of the same name in different namespaces stay apart.
        self.name = f"{node.get_fully_qualified_name().lstrip('/')}: {name}"
        self.hardware_id = hardware_id
        self.counters: Counter = Counter()
        self.values: dict[str, object] = {}
        self.rates: dict[str, float] = {}
        self._status = status
        self._rate_keys: dict[str, str] = {}
        self._rate_base: dict[str, int] = {}
        self._last_publish = time.monotonic()
        self._errors_at_last_publish = 0
        self._log_interval = log_interval
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter = Counter()
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- recording -------------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def set(self, key: str, value) -> None:
        self.values[key] = value

    def track_rate(self, counter: str, name: str | None = None) -> None:
        """Also report counter's increase per second over the last period as `name`."""
        self._rate_keys[counter] = name or f"{counter}_per_s"
        self._rate_base[counter] = self.counters[counter]

    @property
    def error_total(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith(ERROR_PREFIX))

    def error(self, reason: str, message: str) -> None:
        """Count a bad-input event under errors.<reason> and log it, rate-limited per reason."""
        self.counters[ERROR_PREFIX + reason] += 1
        self.log_throttled(reason, message)

    def log_throttled(self, reason: str, message: str) -> None:
        """Log a warning for `reason` unless one was logged within log_interval (no counting).

        The message is made one printable line of bounded length: it may quote outside text."""
        now = time.monotonic()
        last = self._last_log.get(reason)
        if last is not None and now - last < self._log_interval:
            self._suppressed[reason] += 1
            return
        self._last_log[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        total = self.counters[ERROR_PREFIX + reason]
        self.node.get_logger().warning(f"{reason}: {loggable(message, 500)} [{total} so far]{more}")

    # --- publishing ------------------------------------------------------------------------
    def _update_rates(self) -> float:
        now = time.monotonic()
        elapsed = max(now - self._last_publish, 1e-9)
        self._last_publish = now
        for counter, name in self._rate_keys.items():
            current = self.counters[counter]
            self.rates[name] = (current - self._rate_base[counter]) / elapsed
            self._rate_base[counter] = current
        return elapsed

    def status(self) -> DiagnosticStatus:
        """The current DiagnosticStatus (level and message from the status callback; default:
        WARN while new bad-input errors appear, else OK)."""
        self._update_rates()
        errors = self.error_total
        if self._status is not None:
            level, message = self._status(self)
        elif errors > self._errors_at_last_publish:
            level, message = WARN, f"{errors - self._errors_at_last_publish} bad inputs"
        else:
            level, message = OK, "ok"
        self._errors_at_last_publish = errors
        values = [KeyValue(key=k, value=_format(v)) for k, v in sorted(self.rates.items())]
        values += [KeyValue(key=k, value=_format(v)) for k, v in sorted(self.values.items())]
        values += [KeyValue(key=k, value=str(v)) for k, v in sorted(self.counters.items())]
        return DiagnosticStatus(
            level=level, name=self.name, message=message, hardware_id=self.hardware_id,
            values=values,
        )

    def new_errors(self) -> int:
        """Errors counted since the last publish (for status callbacks)."""
        return self.error_total - self._errors_at_last_publish

    def publish(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        array.status = [self.status()]
        try:
            self._publisher.publish(array)
        except RCLError:  # shutting down, or DDS under load: the next period retries
            pass


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
