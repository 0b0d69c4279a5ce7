"""The running system: bag -> roma play -> synchronizer -> engine -> subscribers, all real
processes over DDS, started from launch/roma.launch.py, with a tiny random ROMA checkpoint."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from launch_standin import Resolved, load_launch_description
from media import write_test_video
from roma_ros.client import ALERT_QOS, REPLY_QOS
from roma_ros.msg import Alert, Reply, SpeakScore
from rosutil import ros_context, start_python, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.prefix) / "bin"
BAG_START_S = 1_000_000_000
SECONDS = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "roma_tiny_random", tiny_thinker(0), tiny_head(1))


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bag")
    video = write_test_video(folder / "scene.mp4", seconds=SECONDS, width=320, height=180)
    subprocess.run([str(BIN / "roma"), "record", str(video), "-o", str(folder / "bag"),
                    "--start-time", str(BAG_START_S)], check=True, capture_output=True)
    return folder / "bag"


def params_file(tmp_path: Path, **engine) -> Path:
    config = yaml.safe_load((REPO / "config" / "roma.yaml").read_text())
    engine_key = next((k for k in config if k.rstrip("/").endswith("engine")), "/**/engine")
    config.setdefault(engine_key, {"ros__parameters": {}})["ros__parameters"].update(engine)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_launch_file_declares_the_documented_graph(tmp_path):
    description = load_launch_description(REPO / "launch" / "roma.launch.py", REPO)
    resolved = Resolved(description, {"image_topic": "/camera/image_raw", "audio_topic": "/mic/audio",
                                      "namespace": "robot1", "use_sim_time": "true"})
    assert set(resolved.arguments) == {"namespace", "params_file", "model_path", "model_profile", "backend", "device",
                                       "dtype", "speak_head", "image_topic", "compressed", "audio_topic",
                                       "audio_info_topic", "use_sim_time", "replay"}
    assert resolved.values["params_file"] == str(REPO / "config" / "roma.yaml")
    assert {n.name for n in resolved.nodes} == {"synchronizer", "engine"}
    sync, engine = resolved.node("synchronizer"), resolved.node("engine")
    assert (sync.executable, engine.executable) == ("synchronizer_node", "engine_node")
    assert resolved.resolve(sync.namespace) == resolved.resolve(engine.namespace) == "robot1"
    assert resolved.remappings(sync) == {"image": "/camera/image_raw", "image/compressed": "/camera/image_raw/compressed",
                                         "audio": "/mic/audio", "audio_info": "audio_info"}
    files, values = resolved.parameters(engine)
    assert files == [str(REPO / "config" / "roma.yaml")]
    assert values == {"use_sim_time": "true"}  # only the arguments given override the file
    assert resolved.parameters(sync)[1] == {"use_sim_time": "true"}
    assert type(engine).__name__ == "LifecycleNode" and type(sync).__name__ == "Node"
    given = Resolved(description, {"model_path": "/models/ROMA", "model_profile": "roma-release", "backend": "onnxruntime",
                                   "device": "cuda", "dtype": "bfloat16", "compressed": "true",
                                   "speak_head": "/models/site_head.safetensors"})
    assert given.parameters(given.node("engine"))[1] == {"model_path": "/models/ROMA", "model_profile": "roma-release",
                                                         "backend": "onnxruntime", "device": "cuda", "dtype": "bfloat16",
                                                         "speak_head": "/models/site_head.safetensors"}
    # the synchronizer reads the same model profile (its frame rule) as the engine
    assert given.parameters(given.node("synchronizer"))[1] == {"compressed": "true", "model_path": "/models/ROMA",
                                                               "model_profile": "roma-release"}
    # Both executables exist as console scripts (and in lib/roma_ros after colcon build).
    for node in resolved.nodes:
        assert (BIN / node.executable).exists()


def parameters_received(command: list[str]) -> dict[str, object]:
    """What a node started with `command` receives: each --params-file in order, later files
    overriding earlier ones; within a file, matching sections in the order they are written (as rcl
    merges them)."""
    received = {}
    files = [command[i + 1] for i, word in enumerate(command) if word == "--params-file"]
    node = next(word.split(":=", 1)[1] for word in command if word.startswith("__node:="))
    for path in files:
        document = yaml.safe_load(Path(path).read_text())
        for key in document:
            if key in ("/**", "**") or key.rstrip("/").endswith(f"/{node}"):
                received.update(document[key]["ros__parameters"])
    return received


def test_a_params_file_alone_sets_every_parameter(tmp_path):
    """A YAML of the user's own decides model_path, model_profile, backend, device, dtype,
    compressed and use_sim_time when the launch arguments are not given."""
    config = yaml.safe_load((REPO / "config" / "roma.yaml").read_text())
    mine = {"model_path": "/models/ROMA", "model_profile": "roma-release", "backend": "onnxruntime",
            "device": "cuda:1", "dtype": "bfloat16", "use_sim_time": True}
    for key, section in config.items():
        wanted = {k: v for k, v in mine.items() if key.rstrip("/").endswith("engine") or k in
                  ("model_path", "model_profile", "use_sim_time")}
        section["ros__parameters"].update(wanted)
        if key.rstrip("/").endswith("synchronizer"):
            section["ros__parameters"]["compressed"] = True
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    resolved = Resolved(load_launch_description(REPO / "launch" / "roma.launch.py", REPO), {"params_file": str(path)})
    engine = parameters_received(resolved.command(resolved.node("engine"), BIN, tmp_path))
    sync = parameters_received(resolved.command(resolved.node("synchronizer"), BIN, tmp_path))
    assert {k: engine[k] for k in mine} == mine
    assert (sync["compressed"], sync["use_sim_time"], sync["model_path"], sync["model_profile"]) == (
        True, True, "/models/ROMA", "roma-release")
    # An argument given on the command line still wins over the file.
    resolved = Resolved(load_launch_description(REPO / "launch" / "roma.launch.py", REPO),
                        {"params_file": str(path), "device": "cpu", "use_sim_time": "false"})
    engine = parameters_received(resolved.command(resolved.node("engine"), BIN, tmp_path))
    assert (engine["device"], engine["use_sim_time"], engine["dtype"]) == ("cpu", False, "bfloat16")


def test_the_replay_argument_sets_the_exact_replay_settings(tmp_path):
    from roma_ros.params import REPLAY_ENGINE, REPLAY_SYNC

    def received(arguments):
        resolved = Resolved(load_launch_description(REPO / "launch" / "roma.launch.py", REPO), arguments)
        return (parameters_received(resolved.command(resolved.node("synchronizer"), BIN, tmp_path)),
                parameters_received(resolved.command(resolved.node("engine"), BIN, tmp_path)))

    sync, engine = received({"replay": "true"})
    assert {k: sync[k] for k in REPLAY_SYNC} == REPLAY_SYNC
    assert {k: engine[k] for k in REPLAY_ENGINE} == REPLAY_ENGINE
    sync, engine = received({})
    assert sync.get("qos.image.reliability", "best_effort") != "reliable"
    assert engine.get("overload_policy") != "block"


class Graph:
    """Processes started from the launch file's commands, stopped (and their output kept) at the end."""

    def __init__(self, resolved: Resolved, tmp_path: Path):
        env = {**os.environ, **resolved.environment}
        self.procs = {n.name: subprocess.Popen(resolved.command(n, BIN, tmp_path), env=env, text=True,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                      for n in resolved.nodes}
        self.output = {}

    def stop(self):
        for name, proc in self.procs.items():
            self.output[name] = stop_process(proc)
        return self.output


def test_bag_through_the_launched_graph_gives_scores_alerts_and_replies(tmp_path, checkpoint, bag):
    params = params_file(tmp_path, max_answer_tokens=30, segment_tokens=25, queue_size=8,
                         alert_log=str(tmp_path / "alerts.jsonl"))
    resolved = Resolved(load_launch_description(REPO / "launch" / "roma.launch.py", REPO),
                        {"params_file": str(params), "model_path": str(checkpoint), "use_sim_time": "true"})
    graph = Graph(resolved, tmp_path)
    listener = player = None
    scores, alerts, replies = [], [], []
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("graph_test", context=context)
            executor.add_node(node)
            node.create_subscription(SpeakScore, "/roma/speak_score", scores.append, 50)
            node.create_subscription(Alert, "/roma/alert", alerts.append, ALERT_QOS)
            node.create_subscription(Reply, "/roma/reply", replies.append, REPLY_QOS)
            # The example client node sets a task with threshold 0 (fires every unit) and asks.
            listener = start_python("roma_ros.examples.alert_listener", "--task-id", "anything",
                                    "--instruction", "alert me when anything happens",
                                    "--threshold", "0", "--ask", "what do you see?")
            assert wait_until(lambda: node.count_subscribers("/roma/units") > 0
                              and node.count_publishers("/roma/speak_score") > 0, 60, executor), graph.stop()
            player = start_python("roma_ros.cli", "play", str(bag), "--clock", "--wait-for",
                                  "/roma/image", "/roma/audio", "/roma/audio_info")
            assert wait_until(lambda: player.poll() is not None, 60, executor)
            assert wait_until(lambda: len(scores) >= SECONDS - 3 and any(r.final for r in replies), 90, executor), \
                (len(scores), len(replies), stop_process(listener), graph.stop())
            wait_until(lambda: False, 1.0, executor)
            node.destroy_node()
    finally:
        listener_out = stop_process(listener) if listener else ""
        player_out = stop_process(player) if player else ""
        outputs = graph.stop()
    assert "Traceback" not in "".join(outputs.values()) + listener_out, outputs
    # Speak scores: one per unit, stamped with the unit's end on the bag's clock.
    indices = [s.unit_index for s in scores]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    for s in scores:
        end = s.header.stamp.sec + s.header.stamp.nanosec * 1e-9
        assert BAG_START_S < end <= BAG_START_S + SECONDS + 1
        assert 0.0 <= s.probability <= 1.0
    # The threshold-0 task fires; alerts carry the unit's end stamp and its window start.
    assert alerts, listener_out
    by_index = {s.unit_index: s for s in scores}
    for a in alerts:
        assert a.task_id == "anything" and a.mode == "alert"
        assert a.header.stamp == by_index[a.unit_index].header.stamp
        assert (a.header.stamp.sec - a.window_start.sec) == 1
    assert "ALERT anything" in listener_out
    # The question was answered through the ask action, streamed as partials and replies.
    answer_line = next(line for line in listener_out.splitlines() if line.startswith("ANSWER"))
    query_id = answer_line.split()[1].rstrip(":")
    chunks = [r for r in replies if r.query_id == query_id]
    assert chunks and chunks[-1].final
    assert "PARTIAL" in listener_out
    assert repr("".join(c.text for c in chunks)) in answer_line
    # Every output keeps the camera's frame_id (roma record writes "camera").
    assert {m.header.frame_id for m in scores + alerts + replies} == {"camera"}
    # The alert log recorded every alert the engine published.
    logged = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(logged) >= len(alerts)
