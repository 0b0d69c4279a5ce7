"""Entry points of the node executables (`synchronizer_node`, `engine_node`).

A signal can come at any moment, also while the node's module is still being imported (torch
and transformers take seconds). Until the node's main() runs, SIGINT and SIGTERM end the process
at once with status 0 (nothing exists yet that needs cleaning up, and no interrupted import can
print a traceback). From then on both raise KeyboardInterrupt in the main thread and main()
handles them (rclpy also wakes the executor on them); an interrupt that still reaches this
module is a requested stop, status 0.

    python -m roma_ros.nodes.entry engine_node --ros-args ...
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

MODULES = {"synchronizer_node": "roma_ros.nodes.synchronizer_node", "engine_node": "roma_ros.nodes.engine_node"}


def _exit_quietly(signum, frame):
    os._exit(0)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(name: str) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_quietly)
    main = importlib.import_module(MODULES[name]).main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        return 0


def synchronizer_node() -> int:
    return _run("synchronizer_node")


def engine_node() -> int:
    return _run("engine_node")


if __name__ == "__main__":
    name = sys.argv.pop(1)
    raise SystemExit(_run(name))
