"""How a node process ends: quietly on SIGINT/SIGTERM, and at once.

rclpy reports a shutdown that races the executor in several ways: KeyboardInterrupt (SIGINT,
raised wherever the main thread is, model loading included), ExternalShutdownException, or an
RCLError from building the next wait set on a context that was just invalidated ("the given
context is not valid"). All of them mean "stop", none deserves a traceback.
"""
from __future__ import annotations

import ctypes
import os
import sys

from rclpy.executors import ExternalShutdownException

try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - older rclpy layouts
    RCLError = RuntimeError

SHUTDOWN_EXCEPTIONS = (KeyboardInterrupt, ExternalShutdownException)


def is_shutdown_race(exc: BaseException, context) -> bool:
    """True when `exc` only says that the context was shut down under us."""
    if isinstance(exc, SHUTDOWN_EXCEPTIONS):
        return True
    return isinstance(exc, RCLError) and not context.ok()


def spin_until_shutdown(executor) -> None:
    try:
        executor.spin()
    except (*SHUTDOWN_EXCEPTIONS, RCLError) as exc:
        if not is_shutdown_race(exc, executor.context):
            raise


def quiet_cleanup(*steps) -> None:
    """Run each cleanup step; one that fails (a second SIGINT, a context already gone) is reported
    in one line and the others still run."""
    for step in steps:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - the process is exiting either way
            print(f"shutdown: {step.__qualname__} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown (freeing a large model's tensors and
    torch's exit hooks can take seconds); every output stream is flushed first. Nothing else
    needs saving: the alert log is fsynced per alert."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)  # C-level buffers (rcutils console output)
    except (OSError, AttributeError):
        pass
    os._exit(code)
