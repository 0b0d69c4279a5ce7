"""Example: a robot node that sets a monitoring task, prints alerts, and asks one question.

    python -m roma_ros.examples.alert_listener --instruction "alert me when someone falls" \
        --threshold 0.6 --window 2 --ask "what do you see?"
"""
from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from roma_ros.client import RomaClient, RomaError
from roma_ros.dds import apply_dds_defaults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default="roma")
    parser.add_argument("--task-id", default="watch")
    parser.add_argument("--instruction", required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--cooldown", type=float, default=0.0)
    parser.add_argument("--ask", help="a question to ask once the task is set")
    parser.add_argument("--alerts", type=int, default=0, help="exit after this many alerts (0 = never)")
    args = parser.parse_args(argv)

    apply_dds_defaults()
    rclpy.init()
    node = rclpy.create_node("alert_listener")
    client = RomaClient(node, args.namespace)
    received = []

    def on_alert(alert):
        received.append(alert)
        t = alert.header.stamp.sec + alert.header.stamp.nanosec * 1e-9
        start = alert.window_start.sec + alert.window_start.nanosec * 1e-9
        print(f"ALERT {alert.task_id} t={t:.3f} unit={alert.unit_index} p={alert.probability:.2f} "
              f"window={start:.3f}-{t:.3f}: {alert.text}", flush=True)

    client.on_alert(on_alert)
    try:
        if not client.wait_for_engine(timeout=30.0):
            print("no roma engine found", file=sys.stderr)
            return 1
        print(client.set_task(args.task_id, args.instruction, "alert", args.threshold, args.window,
                              args.cooldown), flush=True)
        if args.ask:
            result = client.ask(args.ask, on_partial=lambda text: print(f"PARTIAL {text!r}", flush=True))
            print(f"ANSWER {result.query_id}: {result.answer!r}", flush=True)
        while rclpy.ok() and (not args.alerts or len(received) < args.alerts):
            rclpy.spin_once(node, timeout_sec=0.1)
        return 0
    except RomaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
