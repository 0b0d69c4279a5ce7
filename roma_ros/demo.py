"""`roma demo`: the whole system on a bundled scene, in one command.

The real graph runs in this process over DDS: a bag player (with /clock), the synchronizer and
the engine (ROMA-tiny unless --model-path says otherwise), both on simulated time. A client node
sets the standing tasks of the scene's annotation file through the set_task service, sends its
scripted questions on `query` (stamped with their scene time), and prints alerts and replies as
they arrive, with their stream times. At the end: a summary scored against the annotations and a
PNG timeline (speak probability, triggers, ground truth).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from roma_ros.dds import apply_dds_defaults

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"
NS = 1_000_000_000


def _stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec / NS


def run_demo(bag: Path, annotations_path: Path, params: Path, out_dir: Path, model_path: str | None,
             rate: float, timeout: float) -> int:
    apply_dds_defaults()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rosbags.rosbag2 import Reader

    from roma_ros.client import RomaClient
    from roma_ros.core.triggers import TriggerRule
    from roma_ros.eval.annotations import load_annotations
    from roma_ros.eval.metrics import effective_rule, evaluate
    from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord
    from roma_ros.eval.report import format_summary, plot_timeline
    from roma_ros.msg import Query
    from roma_ros.nodes.bag_player import BagPlayer
    from roma_ros.nodes.convert import ns_to_time
    from roma_ros.nodes.engine_node import EngineNode
    from roma_ros.nodes.synchronizer_node import SynchronizerNode

    annotations = load_annotations(annotations_path)
    with Reader(bag) as reader:
        bag_start_ns, bag_seconds = reader.start_time, (reader.end_time - reader.start_time) / NS
        image_topic = next((c.topic for c in reader.connections if c.msgtype.endswith("Image")), "/roma/image")
        compressed = any(c.msgtype.endswith("CompressedImage") for c in reader.connections)
    origin_s = annotations.origin if annotations.origin is not None else bag_start_ns / NS

    ros_args = ["--ros-args", "--params-file", str(params)]
    if compressed:
        ros_args += ["-r", f"image/compressed:={image_topic}"]
    else:
        ros_args += ["-r", f"image:={image_topic}"]
    rclpy.init(args=ros_args)
    sim = [Parameter("use_sim_time", value=True)]
    # A demo shows every unit of its scene: wait for the model instead of skipping ahead.
    engine_params = sim + [Parameter("overload_policy", value="block"), Parameter("queue_size", value=16)]
    engine_params += [Parameter("model_path", value=model_path)] if model_path else []
    nodes = [SynchronizerNode(namespace="roma", parameter_overrides=sim + [Parameter("compressed", value=compressed)]),
             EngineNode(namespace="roma", parameter_overrides=engine_params + [Parameter("autostart", value=True)])]
    if nodes[1].session is None:
        print("roma demo: the engine could not load its model (see the log above)", file=sys.stderr)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        return 1
    # The demo prints alerts and replies itself; the engine's own log keeps warnings only.
    from rclpy.logging import LoggingSeverity

    nodes[1].get_logger().set_level(LoggingSeverity.WARN)
    listener = rclpy.create_node("demo_listener", namespace="roma")
    player_node = rclpy.create_node("demo_player")
    executor = MultiThreadedExecutor(num_threads=6)
    for node in [*nodes, listener, player_node]:
        executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

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
        print(f"[{t:6.1f} s] ALERT   {msg.task_id}: {msg.text}  (p={msg.probability:.2f})", flush=True)

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
        if not client.wait_for_engine(timeout=30):
            print("roma demo: the engine did not come up", file=sys.stderr)
            return 1
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
        time.sleep(0.5)  # let the query subscription match
        for query in annotations.queries:
            msg = Query(id=query.id, text=query.text)
            msg.header.stamp = ns_to_time(round((origin_s + query.time) * NS))
            query_pub.publish(msg)
            print(f"question {query.id} at {query.time:.1f} s: {query.text!r}", flush=True)

        player = BagPlayer(player_node, bag, rate=rate, clock=True, clock_tail=4.0)
        player.wait_for_subscribers(player.topics, timeout=10)
        print(f"playing {bag.name} ({bag_seconds:.0f} s at {rate}x) ...", flush=True)
        player.run(stop=lambda: not rclpy.ok())
        # The last units come after the synchronizer's silence timeout (clock tail); wait until
        # nothing new has arrived for a while and nothing waits for the engine.
        deadline = time.monotonic() + timeout
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if len(units) != seen or units_queued(nodes[1]):
                seen, quiet_since = len(units), time.monotonic()
            elif time.monotonic() - quiet_since > 2.0 and units:
                break
            time.sleep(0.1)
    finally:
        executor.shutdown()
        for node in [*nodes, listener, player_node]:
            node.destroy_node()
        rclpy.try_shutdown()

    with lock:
        result = BagResult(bag.name, sorted(units, key=lambda u: u.index), list(alerts), list(replies),
                           origin=origin_s)
    for reply in result.replies:
        result.answers[reply.query_id] = result.answers.get(reply.query_id, "") + reply.text
    metrics = evaluate(result, annotations, rules=rules)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot_timeline(out_dir / "demo_timeline.png", result, metrics, annotations)
    print()
    print(format_summary([metrics]))
    print(f"\n{len(result.units)} units, {len(result.alerts)} alerts, {len(set(r.query_id for r in result.replies))} "
          f"answers; timeline: {png}")
    return 0


def units_queued(engine) -> bool:
    """True while units wait for the engine (answers in progress need further units, so they
    are not waited for)."""
    return engine._units is not None and engine._units.qsize() > 0
