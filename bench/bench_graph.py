"""Real-time factor of the whole graph, live: sensors -> synchronizer_node -> engine_node -> a
client, each in its own process over DDS, on wall-clock time; prints ONE JSON object.

    .venv/bin/python bench/bench_graph.py [--seconds 60] [--width 640 --height 480 --fps 30]
                                          [--mic-rate 48000] [--model-path embedded]

A camera publisher (bgr8 frames at --fps) and a microphone publisher (S16LE stereo, 20 ms chunks)
stand in for the drivers; the nodes run with config/roma.yaml (best-effort sensor inputs, as on a
robot) and the embedded ROMA-tiny unless --model-path says otherwise. Measured over the steady part
of the run (the first --warmup seconds are left out):
- real_time_factor: the engine's processing time per unit / unit duration (median, min, max of
  the per-unit values it reports); below 1 the engine keeps up;
- graph_cpu_per_stream_second: CPU seconds both node processes use per second of sensor input
  (utime + stime from /proc), i.e. how many cores the graph occupies;
- decision_latency_s: speak score received by the client - end of its unit on the sensor clock
  (includes the synchronizer's max_delay wait and the DDS hops);
- units: produced by the synchronizer, scored, dropped by the engine, and any index gaps;
- rss_mib per node at the start and end of the steady part.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from summary import stats  # noqa: E402

NAMESPACE = "/bench"
SENSOR = ("import sys; sys.path.insert(0, {tests!r}); import sensor_publishers as s; "
          "s.{fn}(seconds={seconds}, topic={topic!r}, start_at={start_at}, {extra})")


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def node(kind: str, *params: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"roma_ros.nodes.{kind}_node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
           "--params-file", str(REPO / "config" / "roma.yaml"), "--log-level", "warn"]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def sensor(fn: str, seconds: float, topic: str, start_at: float, extra: str) -> subprocess.Popen:
    code = SENSOR.format(tests=str(REPO / "tests"), fn=fn, seconds=seconds, topic=f"{NAMESPACE}/{topic}",
                         start_at=start_at, extra=extra)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--mic-rate", type=int, default=48_000)
    ap.add_argument("--model-path", default="embedded")
    args = ap.parse_args()

    from roma_ros.dds import apply_dds_defaults

    apply_dds_defaults()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from roma_ros.msg import SpeakScore

    procs = {"synchronizer": node("synchronizer"), "engine": node("engine", f"model_path:={args.model_path}")}
    scores: list[tuple[float, int, int]] = []  # (received wall ns, unit end stamp ns, index)
    diagnostics: list[tuple[float, str, dict]] = []
    rclpy.init()
    client = rclpy.create_node("bench_graph_client")
    client.create_subscription(
        SpeakScore, f"{NAMESPACE}/speak_score",
        lambda m: scores.append((time.time_ns(), m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.unit_index)),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def on_diagnostics(msg):
        for status in msg.status:
            diagnostics.append((time.monotonic(), status.name, {kv.key: kv.value for kv in status.values}))
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(client)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    def latest(name_part: str, key: str, default=0.0) -> float:
        for _, name, values in reversed(diagnostics):
            if name_part in name and key in values:
                return float(values[key])
        return default

    out = {"seconds": args.seconds, "camera": f"{args.width}x{args.height} bgr8 @ {args.fps:g} fps",
           "microphone": f"{args.mic_rate} Hz S16LE stereo, 20 ms chunks", "model_path": args.model_path}
    try:
        # the engine must be configured (model loaded) before the sensors start
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("engine" in n for _, n, _ in diagnostics):
            time.sleep(0.2)
        if not any("engine" in n for _, n, _ in diagnostics):
            raise RuntimeError("engine_node reported no diagnostics within 120 s")
        start_at = time.time() + 3.0
        sensors = [sensor("camera", args.seconds, "image", start_at,
                          f"width={args.width}, height={args.height}, fps={args.fps}"),
                   sensor("microphone", args.seconds, "audio", start_at,
                          f"info_topic={NAMESPACE + '/audio_info'!r}, rate={args.mic_rate}, channels=2")]
        time.sleep(max(0.0, start_at - time.time()) + args.warmup)
        steady_from_ns = time.time_ns()
        cpu0 = {k: proc_cpu_s(p.pid) for k, p in procs.items()}
        rss0 = {k: proc_rss_mib(p.pid) for k, p in procs.items()}
        t0 = time.monotonic()
        steady_s = args.seconds - args.warmup - 1.0
        time.sleep(steady_s)
        cpu1 = {k: proc_cpu_s(p.pid) for k, p in procs.items()}
        rss1 = {k: proc_rss_mib(p.pid) for k, p in procs.items()}
        wall = time.monotonic() - t0
        for s in sensors:
            s.wait(timeout=args.seconds + 30)
        time.sleep(4.0)  # the last units drain
        steady = [(rx, end, i) for rx, end, i in scores if end >= steady_from_ns]
        latencies = [(rx - end) / 1e9 for rx, end, _ in steady]
        rtf = [float(v["real_time_factor"]) for t, n, v in diagnostics
               if "engine" in n and "real_time_factor" in v and t >= t0]
        indices = [i for _, _, i in scores]
        gaps = sorted(set(range(min(indices), max(indices) + 1)) - set(indices)) if indices else []
        out.update({
            "real_time_factor": stats(rtf, digits=4),
            "engine_median_latency_ms": latest("engine", "median_latency_ms"),
            "graph_cpu_per_stream_second": round(sum(cpu1[k] - cpu0[k] for k in procs) / wall, 3),
            "cpu_per_stream_second": {k: round((cpu1[k] - cpu0[k]) / wall, 3) for k in procs},
            "decision_latency_s": stats(latencies, digits=4),
            "units": {"synchronizer_out": int(latest("synchronizer", "units_out")), "scored": len(scores),
                      "engine_dropped": int(latest("engine", "units_dropped")), "index_gaps": len(gaps)},
            "rss_mib": {k: {"start": rss0[k], "end": rss1[k]} for k in procs},
            "steady_wall_s": round(wall, 1),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        })
    finally:
        for p in procs.values():
            p.send_signal(2)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        executor.shutdown()
        spin.join(timeout=5)
        client.destroy_node()
        rclpy.shutdown()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
