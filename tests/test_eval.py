"""`roma eval`: bags replayed offline through the nodes' code, scored against annotations."""
import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bagmaker import BagSpec, write_bag
from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint

ROMA = str(Path(sys.prefix) / "bin" / "roma")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


def annotations(path: Path, events=((1.0, 3.0),)) -> Path:
    path.write_text(yaml.safe_dump({
        "version": 1,
        "tasks": [{"id": "always", "instruction": "alert me when anything happens", "threshold": 0.0,
                   "events": [list(e) for e in events]}],
        "queries": [{"id": "q1", "time": 1.5, "text": "what do you see?", "answers": ["stripes"]}],
    }))
    return path


def roma_eval(*args, cwd=None):
    return subprocess.run([ROMA, "eval", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_eval_writes_outputs_for_recordings_of_other_tools(tmp_path, checkpoint):
    plain = write_bag(tmp_path / "plain", BagSpec(seconds=5))
    # Compressed images, 48 kHz stereo S32LE, the camera starting 2 s after the mic, an extra
    # topic, and mcap storage: all in one bag, evaluated in parallel with the plain one.
    other = write_bag(tmp_path / "other", BagSpec(seconds=6, compressed=True, sample_rate=48000, channels=2,
                                                  sample_format="S32LE", camera_start=2.0, extra_topic=True,
                                                  storage="mcap"))
    ann = annotations(tmp_path / "ann.yaml")
    out = tmp_path / "out"
    result = roma_eval(plain, other, "--annotations", ann, "--model-path", checkpoint, "-o", out, "-j", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for name, seconds in (("plain", 5), ("other", 6)):
        folder = out / name
        for file in ("units.csv", "alerts.jsonl", "replies.jsonl", "metrics.json", "timeline.png"):
            assert (folder / file).is_file(), (name, file)
        rows = list(csv.DictReader((folder / "units.csv").open()))
        assert len(rows) == seconds  # the final units are flushed at the end of the bag
        assert [float(r["start_s"]) for r in rows] == [float(i) for i in range(seconds)]
        assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)
        metrics = json.loads((folder / "metrics.json").read_text())
        task = metrics["tasks"]["always"]
        assert task["metric"] == "pa" and task["success"]["hits"] == 1  # threshold 0 fires at the end of the first unit in [1, 3]
        alerts = [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines()]
        assert [a["time_s"] for a in alerts] == [float(i + 1) for i in range(seconds)]
        replies = [json.loads(line) for line in (folder / "replies.jsonl").read_text().splitlines()]
        assert replies and all(r["query_id"] == "q1" for r in replies)
        assert replies[0]["time_s"] == 3.0  # asked at 1.5 -> inserted after unit [1, 2) -> answered after [2, 3)
        assert (folder / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary and "plain" in result.stdout and "other" in result.stdout


def test_eval_is_deterministic(tmp_path, checkpoint):
    bag = write_bag(tmp_path / "bag", BagSpec(seconds=4))
    ann = annotations(tmp_path / "ann.yaml")
    outputs = []
    for run in range(2):
        result = roma_eval(bag, "--annotations", ann, "--model-path", checkpoint, "-o", tmp_path / f"out{run}")
        assert result.returncode == 0, result.stderr[-2000:]
        folder = tmp_path / f"out{run}" / "bag"
        outputs.append([(folder / f).read_text() for f in ("units.csv", "alerts.jsonl", "replies.jsonl")])
    assert outputs[0] == outputs[1]


def test_bad_bags_end_with_a_clear_message(tmp_path, checkpoint):
    good = write_bag(tmp_path / "good", BagSpec(seconds=3))
    no_sensors = write_bag(tmp_path / "no_sensors", BagSpec(seconds=3, extra_topic=True, sensors=False))
    corrupt = write_bag(tmp_path / "corrupt", BagSpec(seconds=3))
    db = next(corrupt.glob("*.db3"))
    with sqlite3.connect(db) as con:  # a message whose CDR bytes are garbage
        con.execute("UPDATE messages SET data = X'00010203' WHERE id = 5")
    broken_storage = write_bag(tmp_path / "broken_storage", BagSpec(seconds=3))
    db = next(broken_storage.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:2000])
    ann = annotations(tmp_path / "ann.yaml")
    out = tmp_path / "out"
    result = roma_eval(good, no_sensors, corrupt, broken_storage, tmp_path / "missing", "--annotations", ann,
                       "--model-path", checkpoint, "-o", out)
    assert result.returncode == 1
    assert "no bag at" in result.stderr  # a missing path is caught before any work
    result = roma_eval(good, no_sensors, corrupt, broken_storage, "--annotations", ann,
                       "--model-path", checkpoint, "-o", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "no_sensors" in result.stderr and "no camera or microphone topic" in result.stderr
    assert "broken_storage" in result.stderr
    # A single undecodable message is counted and skipped; the bag is still evaluated.
    assert (out / "corrupt" / "units.csv").is_file(), result.stdout[-2000:] + result.stderr[-3000:]
    errors = json.loads((out / "corrupt" / "result.json").read_text())["meta"]["input_errors"]
    assert errors.get("errors.deserialize", 0) == 1
    assert (out / "good" / "metrics.json").is_file()
    # A topic named on the command line must exist.
    result = roma_eval(good, "--image-topic", "/camera/image_raw", "--model-path", checkpoint, "-o", out)
    assert result.returncode == 1 and "no image topic '/camera/image_raw'" in result.stderr


def test_invalid_annotations_are_rejected_before_running(tmp_path, checkpoint):
    bag = write_bag(tmp_path / "bag", BagSpec(seconds=2))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"version": 1, "tasks": [{"id": "t", "instruction": "x",
                                                            "events": [[5.0, 3.0]]}]}))
    result = roma_eval(bag, "--annotations", bad, "--model-path", checkpoint, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert "tasks[0].events[0]" in result.stderr and "Traceback" not in result.stderr
