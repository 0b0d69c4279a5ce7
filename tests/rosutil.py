"""Helpers for tests that use real rclpy nodes over DDS."""
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import rclpy
from rclpy.executors import SingleThreadedExecutor


def wait_until(predicate, timeout: float, executor=None, step: float = 0.02) -> bool:
    """Spin (when an executor is given) until predicate() is true or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=step)
        else:
            time.sleep(step)
    return bool(predicate())


@contextmanager
def ros_context():
    """A private rclpy context with a single-threaded executor, shut down afterwards."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        yield context, executor
    finally:
        executor.shutdown()
        rclpy.shutdown(context=context)


def start_python(module_or_code: str, *args: str, code: bool = False, env=None) -> subprocess.Popen:
    """Start a separate Python process (inherits the test's DDS domain and profile)."""
    cmd = [sys.executable, "-c", module_or_code] if code else [sys.executable, "-m", module_or_code]
    return subprocess.Popen(
        cmd + list(args),
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> str:
    """Interrupt a process started by start_python and return its output."""
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: rclpy shuts down cleanly
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""
