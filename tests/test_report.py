"""Report outputs: the per-bag files parse, the timeline is a real PNG, the tables print."""
import csv
import json
import math
import struct

import pytest

from roma_ros.eval.annotations import parse_annotations
from roma_ros.eval.metrics import evaluate
from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord
from roma_ros.eval.report import format_summary, plot_timeline, print_summary, write_outputs, write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"  # complete file
    return width, height


def annotations():
    return parse_annotations({
        "version": 1,
        "tasks": [
            {"id": "fall", "instruction": "Alert me when someone falls.", "threshold": 0.6, "window": 2,
             "events": [[20, 30], [70, 80]]},
            {"id": "door", "instruction": "Tell me when the door opens.", "metric": "po", "threshold": 0.5,
             "events": [45]},
            {"id": "cook", "instruction": "Narrate.", "mode": "narration", "threshold": 0.8, "window": 1,
             "events": [{"start": 5, "end": 12, "text": "crack the eggs"}, [50, 58]]},
            {"id": "clue", "instruction": "Who took the key?", "metric": "crr", "ask_time": 10, "clue_time": 60},
        ],
        "queries": [
            {"id": "mug", "time": 33, "text": "What color is the mug on the table by the window?", "answers": ["red"]},
            {"time": 85, "text": "How many people?", "answers": ["two"]},
        ],
    }, "demo.yaml")


def bag(name="demo", n=100):
    probs = [0.15 + 0.1 * math.sin(i / 3.0) for i in range(n)]
    for lo, hi, p in [(22, 27, 0.9), (48, 54, 0.85), (8, 10, 0.95), (63, 66, 0.75)]:
        for i in range(lo, min(hi, n)):
            probs[i] = p
    units = [UnitRecord(i, float(i), float(i + 1), probs[i]) for i in range(n)]
    if n > 40:
        units[40].prob = math.nan  # a unit whose probability was never computed
    alerts = []
    for tid, times in {"fall": [10, 24, 26, 65], "door": [45, 50], "cook": [9, 49, 52], "clue": [9, 24, 65]}.items():
        for t in times:
            if t <= n:
                alerts.append(AlertRecord(tid, float(t), t - 1, probs[t - 1], t - 2.0, f"{tid} text", "alert"))
                units[t - 1].fired_task_ids.append(tid)
    replies = [ReplyRecord("mug", 34.0, "It is ", False, 33), ReplyRecord("mug", 35.0, "red.", True, 34)]
    if n > 87:
        replies.append(ReplyRecord("q1", 87.0, "Three people are there.", True, 86))
    return BagResult(name, units, alerts, replies, {"mug": "It is red."}, duration_s=float(n), wall_s=n / 2.5)


def test_write_outputs_files_parse(tmp_path):
    b, ann = bag(), annotations()
    m = evaluate(b, ann, thresholds=[0.5, 0.7], windows=[1, 2])
    paths = write_outputs(tmp_path / "demo", b, m, ann)
    assert sorted(p.name for p in paths.values()) == sorted(
        ["units.csv", "alerts.jsonl", "replies.jsonl", "metrics.json", "result.json", "timeline.png"])
    for p in paths.values():
        assert p.is_file() and p.parent == tmp_path / "demo"

    with paths["units.csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "start_s", "end_s", "prob", "fired"]
    assert len(rows) == 100
    assert rows[40]["prob"] == ""  # NaN written as empty
    assert float(rows[23]["prob"]) == pytest.approx(0.9)
    assert rows[23]["fired"] == "fall;clue"

    alerts = [json.loads(line) for line in paths["alerts.jsonl"].read_text().splitlines()]
    assert len(alerts) == len(b.alerts)
    assert [a["time_s"] for a in alerts] == sorted(a["time_s"] for a in alerts)
    assert set(alerts[0]) == {"task_id", "time_s", "unit_index", "probability", "window_start_s", "text", "mode"}
    replies = [json.loads(line) for line in paths["replies.jsonl"].read_text().splitlines()]
    assert [r["text"] for r in replies] == ["It is ", "red.", "Three people are there."]

    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics["bag"] == "demo" and metrics["queries"]["mug"]["correct"] is True
    assert metrics["tasks"]["fall"]["sweep"]["best"] is not None

    back = BagResult.load(paths["result.json"])
    assert back.name == "demo" and len(back.units) == 100 and math.isnan(back.units[40].prob)
    assert back.alerts == b.alerts and back.replies == b.replies and back.answers == b.answers
    assert evaluate(back, ann, thresholds=None) == evaluate(b, ann, thresholds=None)  # re-scorable

    width, height = png_size(paths["timeline.png"])
    assert 900 <= width <= 2500 and 500 <= height <= 1600
    assert paths["timeline.png"].stat().st_size > 20_000


@pytest.mark.parametrize("case", ["no_annotations", "no_queries", "empty_bag", "long_bag"])
def test_timeline_edge_cases(tmp_path, case):
    ann = annotations()
    if case == "no_annotations":
        b, ann = bag(), None
    elif case == "no_queries":
        b = bag()
        ann.queries = []
    elif case == "empty_bag":
        b = BagResult("empty")
    else:
        b = bag("long", n=3600)
    m = evaluate(b, ann, thresholds=None) if ann is not None else {}
    path = plot_timeline(tmp_path / "t.png", b, m, ann)
    width, height = png_size(path)
    assert width >= 900 and height >= 300


def test_print_summary_single_and_combined(tmp_path, capsys):
    ann = annotations()
    m1 = evaluate(bag("kitchen"), ann, thresholds=[0.5], windows=[1])
    text = print_summary(m1)
    out = capsys.readouterr().out
    assert out.strip() == text.strip()
    header = out.splitlines()[0]
    assert header.split()[:4] == ["bag", "dur", "s", "units"]
    assert "REC %" not in header  # no REC task: the column is left out
    assert "kitchen" in out and "ALL" not in out
    assert "best operating point" in out and "thr 0.5 w 1" in out

    m2 = evaluate(bag("hall", n=60), ann, thresholds=None)
    path = write_summary(tmp_path, [m1, m2])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].startswith("kitchen") and lines[3].startswith("hall") and lines[4].startswith("ALL")
    assert "kitchen/fall" in out and "hall/door" in out
    summary = json.loads(path.read_text())
    assert set(summary["bags"]) == {"kitchen", "hall"}
    c = summary["combined"]["overall"]
    assert c["pa"]["n"] == m1["overall"]["pa"]["n"] + m2["overall"]["pa"]["n"]
    assert summary["combined"]["duration_s"] == 160.0
    assert summary["bags"]["kitchen"]["tasks"]["fall"]["best_operating_point"]["threshold"] == 0.5
    assert "ALL" in format_summary([m1, m2])


def test_write_summary_quiet(tmp_path, capsys):
    m = evaluate(bag(), annotations(), thresholds=None)
    write_summary(tmp_path, [m], print_table=False)
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "summary.json").read_text())["combined"]["bags"] == ["demo"]


def test_records_round_trip_through_strict_json(tmp_path):
    b = BagResult("r", [UnitRecord(0, 0.0, 1.0, math.nan), UnitRecord(5, 7.0, 8.0, 0.25, ["a"], restart=True)],
                  [AlertRecord("a", 8.0, 5, 0.25, 7.0, "x", "narration")], [ReplyRecord("q", 8.0, "hi", True, 5)],
                  {"q": "hi"}, duration_s=8.0, wall_s=1.5, origin=1700000000.0, meta={"model": "stub"})
    d = json.loads(json.dumps(b.to_dict(), allow_nan=False))
    assert d["units"][0]["prob"] is None and d["units"][1]["restart"] is True and "restart" not in d["units"][0]
    back = BagResult.from_dict(d)
    assert math.isnan(back.units[0].prob) and back.units[1] == b.units[1]
    assert (back.alerts, back.replies, back.answers, back.origin, back.meta) == \
        (b.alerts, b.replies, b.answers, b.origin, b.meta)
    b.save(tmp_path / "r.json")
    assert BagResult.load(tmp_path / "r.json").units[1] == b.units[1]
    # duration falls back to the units' span; answers fall back to the concatenated chunks
    b2 = BagResult("r2", b.units, replies=[ReplyRecord("q", 3.0, "b", True, 2), ReplyRecord("q", 2.0, "a", False, 1)])
    assert b2.stream_duration_s == 8.0 and b2.answer("q") == "ab" and b2.answer("none") is None
