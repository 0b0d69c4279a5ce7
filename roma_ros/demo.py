"""`roma demo`: the whole system on a bundled scene, in one command.

The real graph runs over DDS: `synchronizer_node` and `engine_node` (ROMA-tiny unless
--model-path says otherwise) as their own processes, on simulated time, exactly as
`ros2 launch roma_ros roma.launch.py use_sim_time:=true` starts them; this process plays the bag
(with /clock) and is the client: it sets the standing tasks of the scene's annotation file
through the set_task service, sends its scripted questions on `query` (stamped with their scene
time), and prints alerts and replies as they arrive, with their stream times. At the end: a
summary scored against the annotations, the files `roma eval` writes (units.csv, alerts.jsonl,
...) and a PNG timeline (speak probability, triggers, ground truth).

Separate processes matter: in one Python process the engine's inference competes with the
synchronizer's callbacks for the GIL, and a starved synchronizer receives audio late, so the units
would depend on scheduling. Run like this, the demo's units are those of `roma eval` on the bag.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from roma_ros.dds import apply_dds_defaults
from roma_ros.params import REPLAY_ENGINE, REPLAY_SYNC
from roma_ros.core.unit import NS_PER_S as NS

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"
NAMESPACE = "roma"
# The demo replays a bag and shows every unit of it: replay settings (params.REPLAY_*), since a
# robot's best-effort defaults drop what a busy machine cannot take in time.


def _stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec / NS


def node_command(executable: str, params: Path, parameters: dict, remaps: list[str], log_level: str = "info") -> list[str]:
    """The command of a node executable (`synchronizer_node`, `engine_node`) in this Python."""
    cmd = [sys.executable, "-m", "roma_ros.nodes.entry", executable, "--ros-args", "-r", f"__ns:=/{NAMESPACE}", "--params-file", str(params)]
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{name}:={text}"]
    for remap in remaps:
        cmd += ["-r", remap]
    return cmd + ["--log-level", log_level]


class NodeProcess:
    """A node in its own process; its output is kept (last lines) for error messages."""

    def __init__(self, name: str, cmd: list[str]):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.tail: deque[str] = deque(maxlen=40)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.tail.append(line.rstrip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.tail)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(2)  # SIGINT: a clean rclpy shutdown
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)


class GraphState:
    """What the nodes report on /diagnostics: whether the synchronizer has flushed everything
    (both inputs silent) and how many units it sent."""

    def __init__(self):
        self.flushed = False
        self.units_sent = 0

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if not status.name.endswith("synchronizer: sensor sync"):
                continue
            values = {kv.key: kv.value for kv in status.values}
            self.units_sent = int(values.get("units_out", 0))
            self.flushed = values.get("silent_inputs") == "audio,video"


def run_demo(bag: Path, annotations_path: Path, params: Path, out_dir: Path, model_path: str | None,
             rate: float, timeout: float, model_profile: str | None = None, speak_head: str | None = None) -> int:
    apply_dds_defaults()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from rosbags.rosbag2 import Reader

    from roma_ros.client import RomaClient
    from roma_ros.core.triggers import TriggerRule
    from roma_ros.eval.annotations import load_annotations
    from roma_ros.eval.metrics import effective_rule, evaluate
    from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord
    from roma_ros.eval.report import format_summary, plot_timeline, write_outputs
    from roma_ros.msg import Query
    from roma_ros.nodes.bag_player import BagPlayer
    from roma_ros.pipeline.convert import ns_to_time

    annotations = load_annotations(annotations_path)
    with Reader(bag) as reader:
        bag_start_ns, bag_seconds = reader.start_time, (reader.end_time - reader.start_time) / NS
        image_topic = next((c.topic for c in reader.connections if c.msgtype.endswith("Image")), "/roma/image")
        compressed = any(c.msgtype.endswith("CompressedImage") for c in reader.connections)
    origin_s = annotations.origin if annotations.origin is not None else bag_start_ns / NS

    sync_parameters = {"use_sim_time": True, "compressed": compressed, **REPLAY_SYNC}
    image_remap = f"image/compressed:={image_topic}" if compressed else f"image:={image_topic}"
    # A demo shows every unit of its scene: the engine waits for the model instead of skipping.
    # Its scripted questions are all published at the start, stamped with their scene times, so
    # they may lie any distance ahead of the stream (max_query_lead 0).
    engine_parameters = {"use_sim_time": True, **REPLAY_ENGINE, "autostart": True, "max_query_lead": 0.0}
    # both nodes read the model profile: the synchronizer sizes frames by its rule
    for name, value in (("model_path", model_path), ("model_profile", model_profile)):
        if value:
            engine_parameters[name] = value
            sync_parameters[name] = value
    if speak_head:
        engine_parameters["speak_head"] = str(Path(speak_head).resolve())
    # The demo prints alerts and replies itself; the engine's own log keeps warnings only.
    processes = [
        NodeProcess("synchronizer", node_command("synchronizer_node", params, sync_parameters,
                                                 [image_remap], log_level="warn")),
        NodeProcess("engine", node_command("engine_node", params, engine_parameters, [],
                                           log_level="warn")),
    ]

    rclpy.init()
    listener = rclpy.create_node("demo_client", namespace=NAMESPACE)
    player_node = rclpy.create_node("demo_player")
    executor = MultiThreadedExecutor(num_threads=3)
    for node in (listener, player_node):
        executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    graph = GraphState()
    listener.create_subscription(DiagnosticArray, "/diagnostics", graph.on_diagnostics, 50)

    units, alerts, replies = [], [], []
    lock = threading.Lock()

    def rel(stamp) -> float:
        return _stamp_s(stamp) - origin_s

    def on_score(msg):
        with lock:
            units.append(UnitRecord(msg.unit_index, rel(msg.header.stamp) - 1.0, rel(msg.header.stamp),
                                    float(msg.probability), list(msg.fired_task_ids)))

    def on_alert(msg):
        t = rel(msg.header.stamp)
        with lock:
            alerts.append(AlertRecord(msg.task_id, t, msg.unit_index, float(msg.probability),
                                      rel(msg.window_start), msg.text, msg.mode))
        print(f"[{t:6.1f} s] ALERT   {msg.task_id}: p={msg.probability:.2f} over {rel(msg.window_start):.1f}-{t:.1f} s "
              f"(unit {msg.unit_index}): {msg.text}", flush=True)

    def on_reply(msg):
        t = rel(msg.header.stamp)
        with lock:
            replies.append(ReplyRecord(msg.query_id, t, msg.text, msg.final, msg.unit_index))
        if msg.final:
            answer = "".join(r.text for r in replies if r.query_id == msg.query_id)
            print(f"[{t:6.1f} s] REPLY   {msg.query_id}: {answer.strip()}", flush=True)

    client = RomaClient(listener, "roma")
    client.on_alert(on_alert)
    client.on_reply(on_reply)
    client.on_speak_score(on_score)

    try:
        model = engine_parameters.get("model_path") or "the embedded ROMA-tiny"
        print(f"starting synchronizer_node and engine_node; the engine loads {model} ...", flush=True)
        waited = time.monotonic()
        if not client.wait_for_engine(timeout=max(60.0, timeout)):
            engine = processes[1]
            state = "exited" if not engine.alive() else "is running but has no services"
            print(f"roma demo: the engine {state}: it could not load its model?\n{engine.output()}",
                  file=sys.stderr)
            return 1
        print(f"engine ready after {time.monotonic() - waited:.1f} s", flush=True)
        default_rule = TriggerRule(0.5, 1, 0.0)
        rules = {}
        for task in annotations.tasks:
            rule = effective_rule(task, default_rule)
            rules[task.id] = rule
            future = client.set_task_async(task.id, task.instruction, task.mode, rule.threshold, rule.window,
                                           rule.cooldown_s)
            deadline = time.monotonic() + 10
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            print(f"task    {task.id}: {task.instruction!r} ({task.mode}, threshold {rule.threshold}, "
                  f"window {rule.window})", flush=True)
        query_pub = listener.create_publisher(Query, "query", 10)
        deadline = time.monotonic() + 10
        while query_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for query in annotations.queries:
            msg = Query(id=query.id, text=query.text)
            msg.header.stamp = ns_to_time(round((origin_s + query.time) * NS))
            query_pub.publish(msg)
            print(f"question {query.id} at {query.time:.1f} s: {query.text!r}", flush=True)

        # After the bag, sim time keeps moving until the synchronizer reports both inputs silent
        # (it has flushed its last unit); bounded by a generous tail.
        player = BagPlayer(player_node, bag, rate=rate, clock=True, clock_tail=60.0)
        player.wait_for_subscribers(player.topics, timeout=10)
        print(f"playing {bag.name} ({bag_seconds:.0f} s at {rate}x) ...", flush=True)
        player.run(stop=lambda: not rclpy.ok(), tail_until=lambda: graph.flushed)
        # Then the engine's score for every unit the synchronizer sent (answers still in
        # progress need further units: not waited for).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (graph.flushed and len(units) >= graph.units_sent):
            time.sleep(0.05)
        if not graph.flushed or len(units) < graph.units_sent:
            print(f"roma demo: after {timeout:.0f} s, {len(units)} of {graph.units_sent} units scored",
                  file=sys.stderr)
        time.sleep(0.5)  # alerts and replies of the last unit travel on their own topics
    finally:
        executor.shutdown()
        for node in (listener, player_node):
            node.destroy_node()
        rclpy.try_shutdown()
        for process in processes:
            process.stop()

    with lock:
        result = BagResult(bag.name, sorted(units, key=lambda u: u.index), list(alerts), list(replies),
                           origin=origin_s)
    for reply in result.replies:
        result.answers[reply.query_id] = result.answers.get(reply.query_id, "") + reply.text
    finished = {r.query_id for r in result.replies if r.final}
    for query_id, answer in result.answers.items():  # the bag ended while the model was answering
        if query_id not in finished:
            t = max(r.time_s for r in result.replies if r.query_id == query_id)
            print(f"[{t:6.1f} s] REPLY   {query_id} (unfinished when the bag ended): {answer.strip()}")
    metrics = evaluate(result, annotations, rules=rules)
    write_outputs(out_dir, result, metrics, annotations, timeline=False)  # as `roma eval` writes them
    png = plot_timeline(out_dir / "demo_timeline.png", result, metrics, annotations)
    print()
    print(format_summary([metrics]))
    print(f"\n{len(result.units)} units, {len(result.alerts)} alerts, {len(set(r.query_id for r in result.replies))} "
          f"answers; timeline: {png}")
    return 0
