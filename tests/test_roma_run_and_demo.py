"""`roma run` (both nodes in one process) and `roma demo` (the whole system on a scene)."""
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
            player = start_python("roma_ros.cli", "play", str(bag), "--clock", "--clock-tail", "4",
                                  "--wait-for", "/cam/image", "/roma/audio", "/roma/audio_info")
            assert wait_until(lambda: len(scores) >= 5, 60, executor), len(scores)
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
    assert any("] REPLY   q1:" in line for line in lines) or "q1" in result.stdout
    assert "6 units, 6 alerts" in result.stdout
    png = tmp_path / "out" / "demo_timeline.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_bundled_demo_alerts_inside_the_annotated_windows(tmp_path):
    from roma_ros.demo import SAMPLE_DIR
    from roma_ros.eval.annotations import load_annotations

    windows = [(e.start, e.end) for task in load_annotations(SAMPLE_DIR / "annotations.yaml").tasks
               for e in task.events]
    result = subprocess.run([ROMA, "demo", "-o", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    alert_times = [float(line.split("]")[0].strip("[ s")) for line in result.stdout.splitlines() if "] ALERT" in line]
    assert alert_times, result.stdout
    # Within 2 s of a window: the one-process demo graph's units can vary slightly with thread
    # scheduling (an open defect; `roma eval` and the multi-process graph are bit-identical).
    for t in alert_times:
        assert any(start - 2.0 <= t <= end + 2.0 for start, end in windows), (t, windows)
    units = int(result.stdout.split(" units,")[0].split()[-1])
    assert units >= 40
    assert (tmp_path / "demo_timeline.png").is_file()
