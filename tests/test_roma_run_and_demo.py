"""`roma run` (both nodes in one process) and `roma demo` (the whole system on a scene)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
import yaml

from bagmaker import BagSpec, write_bag
from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from roma_ros.msg import SpeakScore
from rosutil import ros_context, start_python, stop_process, wait_until

ROMA = str(Path(sys.prefix) / "bin" / "roma")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


def test_roma_run_serves_the_graph_from_one_process(tmp_path, checkpoint):
    bag = write_bag(tmp_path / "bag", BagSpec(seconds=5, image_topic="/cam/image", audio_topic="/roma/audio",
                                              info_topic="/roma/audio_info"))
    scores = []
    run = start_python("roma_ros.cli", "run", "--model-path", str(checkpoint), "--use-sim-time",
                       "--remap", "image:=/cam/image")
    player = None
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("run_test", context=context)
            executor.add_node(node)
            node.create_subscription(SpeakScore, "/roma/speak_score", scores.append, 50)
            assert wait_until(lambda: node.count_subscribers("/cam/image") > 0
                              and node.count_publishers("/roma/speak_score") > 0, 60, executor)
            # half speed: on a loaded machine best-effort sensor messages must not outrun the graph
            player = start_python("roma_ros.cli", "play", str(bag), "--rate", "0.5", "--clock",
                                  "--clock-tail", "4", "--wait-for", "/cam/image", "/roma/audio", "/roma/audio_info")
            assert wait_until(lambda: len(scores) >= 5, 120, executor), len(scores)
            node.destroy_node()
    finally:
        if player is not None:
            stop_process(player)
        output = stop_process(run)
    assert run.returncode == 0, output  # SIGINT ends it cleanly
    assert "Traceback" not in output
    assert [s.unit_index for s in scores[:5]] == [0, 1, 2, 3, 4]
    assert scores[0].header.stamp.sec == 1_000_000_001  # end of the first unit, bag time


def test_roma_demo_prints_alerts_and_replies_and_draws_a_timeline(tmp_path, checkpoint):
    scene = tmp_path / "scene"
    write_bag(scene / "bag", BagSpec(seconds=6, compressed=True, image_topic="/roma/image/compressed",
                                     audio_topic="/roma/audio", info_topic="/roma/audio_info"))
    (scene / "annotations.yaml").write_text(yaml.safe_dump({
        "version": 1,
        "tasks": [{"id": "always", "instruction": "alert me when anything happens", "threshold": 0.0,
                   "events": [[2.0, 4.0]]}],
        "queries": [{"id": "q1", "time": 1.5, "text": "what do you see?", "answers": ["stripes"]}],
    }))
    result = subprocess.run([ROMA, "demo", "--bag", str(scene / "bag"), "--annotations",
                             str(scene / "annotations.yaml"), "--model-path", str(checkpoint), "--rate", "2",
                             "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    alert_times = [float(line.split("]")[0].strip("[ s")) for line in lines if "] ALERT" in line]
    assert alert_times == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # threshold 0: every unit, at its end
    replies = [line for line in lines if "] REPLY   q1" in line]
    assert len(replies) == 1, result.stdout[-2000:]  # its answer, printed once (finished or not)
    assert "6 units, 6 alerts" in result.stdout
    png = tmp_path / "out" / "demo_timeline.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_bundled_demo_gives_the_units_and_alerts_of_roma_eval(tmp_path):
    """The demo runs the live graph (separate node processes, sim time); its units, speak
    probabilities and alerts are those of the offline evaluator on the same bag."""
    from roma_ros.demo import SAMPLE_DIR

    demo = subprocess.run([ROMA, "demo", "-o", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    offline = subprocess.run([ROMA, "eval", str(SAMPLE_DIR / "bag"), "--annotations", str(SAMPLE_DIR / "annotations.yaml"),
                              "-o", str(tmp_path / "eval")], capture_output=True, text=True, timeout=300)
    assert offline.returncode == 0, offline.stderr[-2000:]
    demo_units = (tmp_path / "demo" / "units.csv").read_text().splitlines()
    assert len(demo_units) == 41  # header + one unit per second of the 40 s scene
    assert demo_units == (tmp_path / "eval" / "bag" / "units.csv").read_text().splitlines()
    demo_alerts = [json.loads(line) for line in (tmp_path / "demo" / "alerts.jsonl").read_text().splitlines()]
    eval_alerts = [json.loads(line) for line in (tmp_path / "eval" / "bag" / "alerts.jsonl").read_text().splitlines()]
    assert [(a["task_id"], a["unit_index"]) for a in demo_alerts] == [(a["task_id"], a["unit_index"]) for a in eval_alerts]
    printed = [float(line.split("]")[0].strip("[ s")) for line in demo.stdout.splitlines() if "] ALERT" in line]
    assert printed == [round(a["time_s"], 1) for a in eval_alerts]
    assert (tmp_path / "demo" / "demo_timeline.png").is_file()


README_RUN = ".venv/bin/roma run --compressed --use-sim-time"
README_LISTENER = (".venv/bin/python -m roma_ros.examples.alert_listener --task-id safety --window 2 --instruction "
                   "\"Alert me when a cat appears, the alarm beeps or someone calls for help.\"")
README_PLAY = ".venv/bin/roma play roma_ros/data/sample/bag --clock"


def test_the_readme_roma_run_and_play_of_the_bundled_scene_gives_alerts():
    """The README's three commands, as written there (embedded ROMA-tiny, best-effort sensors)."""
    import shlex

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for command in (README_RUN, README_LISTENER, README_PLAY):
        assert command in readme, command
    repo = Path(__file__).resolve().parent.parent

    def start(command):
        words = shlex.split(command)
        return subprocess.Popen([str(repo / words[0])] + words[1:], cwd=repo, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    run = start(README_RUN)
    listener = player = None
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("readme_run_test", context=context)
            executor.add_node(node)
            assert wait_until(lambda: node.count_subscribers("/roma/image/compressed") > 0
                              and node.count_publishers("/roma/alert") > 0, 120, executor), stop_process(run)
            listener = start(README_LISTENER)
            assert wait_until(lambda: node.count_subscribers("/roma/alert") > 0, 60, executor), stop_process(listener)
            wait_until(lambda: False, 2.0, executor)  # the listener sets its task before the bag starts
            player = start(README_PLAY)
            assert wait_until(lambda: player.poll() is not None, 120, executor)
            wait_until(lambda: False, 4.0, executor)  # the last units leave the engine
            node.destroy_node()
    finally:
        player_out = stop_process(player) if player else ""
        listener_out = stop_process(listener) if listener else ""
        run_out = stop_process(run)
    assert "Traceback" not in run_out + listener_out + player_out, run_out[-3000:]
    alerts = [line for line in listener_out.splitlines() if line.startswith("ALERT safety")]
    assert alerts, (listener_out[-2000:], run_out[-2000:])
