"""The attack campaign against the live graph, as numbers: prints ONE JSON object.

    .venv/bin/python bench/bench_attacks.py [--model-path embedded]

synchronizer_node and engine_node run in their own processes (config/roma.yaml) while a camera
(10 fps) and a microphone (100 ms chunks) feed them; then each attack of tests/attacks.py is sent
in turn. Per attack: what was sent, what each node counted under errors.<reason> meanwhile, and the
units that followed (audio coverage, repeated frames, restarts, finite speak probabilities).
Also: RSS of both nodes before and after, log lines an attacker managed to forge, log volume.
tests/test_reliability_attacks.py asserts on the same report.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from attacks import run_campaign, summary  # noqa: E402
from rosutil import ros_context  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="", help="checkpoint for the engine (default: a tiny random "
                                                         "Qwen2.5-Omni in ROMA's layout, fast on CPU)")
    args = parser.parse_args()
    model_path = args.model_path
    if not model_path:
        from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint

        model_path = str(write_checkpoint(Path(tempfile.mkdtemp()) / "tiny", tiny_thinker(0), tiny_head(1)))
    with ros_context() as (context, executor):
        report = run_campaign(model_path, executor, context)
    print(json.dumps(summary(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
