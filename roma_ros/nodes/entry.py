"""Entry points of the node executables (`synchronizer_node`, `engine_node`).

A signal can come at any moment, also while the node's module is still being imported (torch
and transformers take seconds). From here on SIGINT and SIGTERM both raise KeyboardInterrupt in
the main thread, and an interrupted start ends quietly with status 0; once the node runs, its
main() handles them (rclpy also wakes the executor on them).

    python -m roma_ros.nodes.entry engine_node --ros-args ...
"""
from __future__ import annotations

import importlib
import signal
import sys

MODULES = {"synchronizer_node": "roma_ros.nodes.synchronizer_node", "engine_node": "roma_ros.nodes.engine_node"}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(name: str) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # SIGINT raises KeyboardInterrupt already
    try:
        main = importlib.import_module(MODULES[name]).main
    except KeyboardInterrupt:
        return 0
    return main()


def synchronizer_node() -> int:
    return _run("synchronizer_node")


def engine_node() -> int:
    return _run("engine_node")


if __name__ == "__main__":
    name = sys.argv.pop(1)
    raise SystemExit(_run(name))
