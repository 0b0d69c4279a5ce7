"""DDS transport latency of `units` (roma_ros/MultimodalUnit) between two processes; prints JSON.

    .venv/bin/python bench/bench_transport.py [--units 60] [--rate 10]

A publisher (this process) sends ROMA-sized units (2 rgb8 frames of 336x168 + 16,000 float32
samples, ~400 kB) to a subscriber process on loopback with the QoS the nodes use (reliable,
depth 10) and our Fast DDS profile (unless FASTDDS_DEFAULT_PROFILES_FILE is set). Latency =
receive time - publish time on the same clock (the send time rides in header.frame_id).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SUBSCRIBER = r"""
import json, sys, time
import rclpy
from roma_ros.msg import MultimodalUnit
rclpy.init()
node = rclpy.create_node("bench_units_sub")
latencies = []
expected = int(sys.argv[1])
def on_unit(msg):
    latencies.append((time.time_ns() - int(msg.header.frame_id)) / 1e6)
node.create_subscription(MultimodalUnit, "/bench/units", on_unit, 10)
print("READY", flush=True)
deadline = time.monotonic() + 120
while len(latencies) < expected and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps(latencies), flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0, help="units per second sent")
    args = parser.parse_args()
    from roma_ros.dds import apply_dds_defaults

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    apply_dds_defaults()
    import rclpy

    from roma_ros.core.unit import Unit
    from roma_ros.msg import MultimodalUnit
    from roma_ros.pipeline.convert import unit_to_msg

    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(args.units)], stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "READY"
    rclpy.init()
    node = rclpy.create_node("bench_units_pub")
    pub = node.create_publisher(MultimodalUnit, "/bench/units", 10)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (168, 336, 3), dtype=np.uint8) for _ in range(2)]
    audio = rng.uniform(-1, 1, 16000).astype(np.float32)
    msgs = []
    for i in range(args.units):
        msgs.append(unit_to_msg(Unit(i, 10**18 + i * 10**9, 10**9, frames, audio, frame_stamps_ns=[0, 0])))
    size = len(msgs[0].frames[0].data) * 2 + 4 * len(msgs[0].audio)
    time.sleep(0.5)
    for msg in msgs:
        msg.header.frame_id = str(time.time_ns())
        pub.publish(msg)
        time.sleep(1.0 / args.rate)
    out, _ = sub.communicate(timeout=120)
    latencies = json.loads(out.strip().splitlines()[-1])
    node.destroy_node()
    rclpy.shutdown()
    result = {
        "bench": "transport_units",
        "unit_bytes": size,
        "sent": args.units,
        "received": len(latencies),
        "latency_ms": {"median": round(statistics.median(latencies), 3), "min": round(min(latencies), 3),
                       "max": round(max(latencies), 3)} if latencies else None,
        "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"),
    }
    print(json.dumps(result, indent=1))
    return 0 if latencies else 1


if __name__ == "__main__":
    raise SystemExit(main())
