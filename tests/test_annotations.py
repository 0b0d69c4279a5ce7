"""Annotation files: the documented format loads, and every mistake is named by its field path."""
import json
import re
from pathlib import Path

import pytest
import yaml

from roma_ros.eval.annotations import (
    AnnotationError,
    Annotations,
    Event,
    load_annotations,
    parse_annotations,
    save_annotations,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "annotations.md"


def _problems(data):
    with pytest.raises(AnnotationError) as info:
        parse_annotations(data, "t.yaml")
    return info.value


def _task(**kw):
    base = {"id": "t", "instruction": "Alert me when someone falls."}
    base.update(kw)
    return base


def _one(**kw):
    return {"version": 1, "tasks": [_task(**kw)]}


def test_documented_example_is_valid():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/annotations.md lost its example"
    ann = parse_annotations(yaml.safe_load(blocks[0]), "doc")
    by_id = {t.id: t for t in ann.tasks}
    assert ann.origin == 1700000000.0
    assert by_id["fall"].events == [Event(12.0, 18.5), Event(40.0, 47.0)]
    assert (by_id["fall"].threshold, by_id["fall"].window, by_id["fall"].cooldown) == (0.5, 5, 10.0)
    assert by_id["door"].metric == "po" and by_id["door"].events[0].is_point
    assert by_id["steps"].mode == "narration" and by_id["steps"].metric == "narration"
    assert by_id["steps"].events[0].text.startswith("cracks")
    assert (by_id["who"].ask_time, by_id["who"].clue_time) == (20.0, 44.0)
    assert by_id["empty_room"].events == [] and by_id["empty_room"].metric == "pa"
    assert [q.id for q in ann.queries] == ["mug", "q1"]
    assert ann.queries[1].clue_time == 52.0


def test_yaml_and_json_files_give_the_same_annotations(tmp_path):
    data = {"version": 1, "origin": 12.5,
            "tasks": [_task(events=[[1, 2], [5, 9]]), _task(id="n", mode="narration", events=[[0, 4]])],
            "queries": [{"time": 3, "text": "Who?", "answers": ["Bob"]}]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "a.json").write_text(json.dumps(data))
    a, b = load_annotations(tmp_path / "a.yaml"), load_annotations(tmp_path / "a.json")
    assert a.tasks == b.tasks and a.queries == b.queries and a.origin == b.origin == 12.5
    assert a.source.endswith("a.yaml")


def test_defaults():
    ann = parse_annotations({"version": 1, "tasks": [_task()], "queries": [{"time": 1, "text": "x?"}]})
    t = ann.tasks[0]
    assert (t.mode, t.metric, t.events, t.threshold, t.window, t.cooldown, t.ask_time) == \
        ("alert", "pa", [], None, None, None, 0.0)
    assert t.effective_tolerance == 0.0
    assert parse_annotations(_one(metric="po")).tasks[0].effective_tolerance == 2.0
    assert parse_annotations(_one(metric="po", tolerance=1)).tasks[0].effective_tolerance == 1.0
    assert ann.queries[0].id == "q0" and ann.queries[0].answers == []
    assert parse_annotations({"version": 1}).tasks == []
    assert ann.task("t") is t and ann.query("q0") is ann.queries[0]
    with pytest.raises(KeyError):
        ann.task("nope")


def test_po_events_accept_single_times():
    ann = parse_annotations(_one(metric="po", events=[4, [7], [9.5, 9.5], {"start": 12}]))
    assert [(e.start, e.end) for e in ann.tasks[0].events] == [(4, 4), (7, 7), (9.5, 9.5), (12, 12)]


def test_end_before_start_names_the_path():
    err = _problems({"version": 1, "tasks": [_task(), _task(id="b", events=[[5.0, 3.0]])]})
    assert str(err) == "t.yaml: tasks[1].events[0]: end 3.0 is before start 5.0"
    assert err.problems == [("tasks[1].events[0]", "end 3.0 is before start 5.0")]
    assert isinstance(err, ValueError)


def test_all_problems_are_collected():
    err = _problems({
        "version": 1, "extra": 1,
        "tasks": [_task(colour="red", events=[[1]]), _task(instruction="", threshold=1.5, window=0),
                  {"instruction": "x"}],
        "queries": [{"time": "soon", "text": "q", "answers": "red"}, {"time": 1}],
    })
    paths = [p for p, _ in err.problems]
    assert paths == ["extra", "tasks[0].colour", "tasks[0].events[0]", "tasks[1].instruction",
                     "tasks[1].threshold", "tasks[1].window", "tasks[2].id", "queries[0].time",
                     "queries[0].answers", "queries[1].text"]
    text = str(err)
    assert text.startswith("t.yaml: 10 problems\n")
    assert "tasks[0].colour: unknown key (allowed: ask_time" in text
    assert "tasks[1].threshold: 1.5 is above the maximum 1.0" in text
    assert "tasks[1].window: 0 is below the minimum 1" in text
    assert "tasks[2].id: missing (required)" in text
    assert "queries[0].time: expected a number, got a string ('soon')" in text
    assert 'queries[0].answers: expected a list of strings, got a string (write ["red"])' in text


@pytest.mark.parametrize("data, path, message", [
    ({"tasks": []}, "version", "missing (required)"),
    ({"version": 2}, "version", "unsupported version 2"),
    ({"version": True}, "version", "unsupported version True"),
    ({"version": 1, "origin": "now"}, "origin", "expected a number"),
    ({"version": 1, "tasks": {"id": "x"}}, "tasks", "expected a list of tasks, got a mapping"),
    ({"version": 1, "tasks": ["fall"]}, "tasks[0]", "expected a mapping, got a string"),
    (_one(mode="shout"), "tasks[0].mode", "'shout' is not one of alert, narration"),
    (_one(metric="narration"), "tasks[0].metric", "'narration' is not valid for mode 'alert'"),
    (_one(mode="narration", metric="pa"), "tasks[0].metric", "'pa' is not valid for mode 'narration'"),
    (_one(threshold=True), "tasks[0].threshold", "expected a number, got a boolean"),
    (_one(threshold=float("nan")), "tasks[0].threshold", "expected a finite number"),
    (_one(window=2.5), "tasks[0].window", "expected an integer"),
    (_one(cooldown=-1), "tasks[0].cooldown", "-1 is below the minimum 0.0"),
    (_one(events=[[-1, 2]]), "tasks[0].events[0][0]", "-1 is below the minimum 0.0"),
    (_one(events=[[1, 2, 3]]), "tasks[0].events[0]", "expected [start, end], got a list of 3 items"),
    (_one(events=[4]), "tasks[0].events[0]", "a single time is only valid for metric po"),
    (_one(events="[1, 2]"), "tasks[0].events", "expected a list of events"),
    (_one(events=[{"start": 1}]), "tasks[0].events[0].end", "missing (required)"),
    (_one(events=[{"start": 1, "end": 2, "label": "x"}]), "tasks[0].events[0].label", "unknown key"),
    (_one(events=[[1, 5], [4, 8]]), "tasks[0].events[1]", "overlaps events[0]"),
    (_one(events=[[10, 12], [1, 5], [4, 8]]), "tasks[0].events[2]", "[4.0, 8.0] overlaps events[1] [1.0, 5.0]"),
    (_one(metric="po", events=[[3, 5]]), "tasks[0].events[0]", "metric po needs a single time"),
    (_one(metric="po", events=[3, 3]), "tasks[0].events[1]", "overlaps events[0]"),
    (_one(mode="narration", events=[[3, 3]]), "tasks[0].events[0]", "need end > start"),
    (_one(metric="crr", ask_time=5), "tasks[0].clue_time", "missing (metric crr needs"),
    (_one(metric="crr", clue_time=5), "tasks[0].ask_time", "missing (metric crr needs"),
    (_one(metric="crr", ask_time=5, clue_time=3), "tasks[0].clue_time", "3.0 is before ask_time 5.0"),
    (_one(metric="crr", ask_time=1, clue_time=3, events=[[1, 2]]), "tasks[0].events", "leave events out"),
    (_one(clue_time=3), "tasks[0].clue_time", "only used with metric crr"),
    ({"version": 1, "tasks": [_task(), _task()]}, "tasks[1].id", "duplicate id 't' (also tasks[0])"),
    ({"version": 1, "queries": [{"time": 1, "text": "a"}, {"id": "q0", "time": 2, "text": "b"}]},
     "queries[1].id", "duplicate id 'q0'"),
    ({"version": 1, "queries": [{"time": 1, "text": "a", "answers": ["red", 3]}]},
     "queries[0].answers[1]", "expected a string, got a number"),
    ({"version": 1, "queries": [{"time": 1, "text": "a", "answers": ["The!"]}]},
     "queries[0].answers[0]", "empty after normalization"),
    ({"version": 1, "queries": [{"time": 5, "text": "a", "clue_time": 2}]},
     "queries[0].clue_time", "2.0 is before the query time 5.0"),
    ({"version": 1, "queries": [{"time": 5, "text": "a", "answer": ["x"]}]}, "queries[0].answer", "unknown key"),
])
def test_each_mistake_is_reported_at_its_path(data, path, message):
    err = _problems(data)
    assert any(p == path and message in m for p, m in err.problems), err.problems


def test_touching_events_are_fine_and_order_does_not_matter():
    ann = parse_annotations(_one(events=[[5, 9], [0, 5], [9, 9.5]]))
    assert [(e.start, e.end) for e in ann.tasks[0].events] == [(5, 9), (0, 5), (9, 9.5)]  # file order kept
    assert ann.tasks[0].intervals == [(0, 5), (5, 9), (9, 9.5)]


def test_file_level_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntasks: [\n")
    with pytest.raises(AnnotationError, match=r"bad.yaml: invalid YAML"):
        load_annotations(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("version: 1\ntasks:\n  - id: a\n    instruction: x\n    id: b\n")
    with pytest.raises(AnnotationError, match=r"duplicate key 'id' \(line 5"):
        load_annotations(dup)
    dupj = tmp_path / "dup.json"
    dupj.write_text('{"version": 1, "version": 1}')
    with pytest.raises(AnnotationError, match="duplicate key 'version'"):
        load_annotations(dupj)
    badj = tmp_path / "bad.json"
    badj.write_text("{version: 1}")
    with pytest.raises(AnnotationError, match="invalid JSON"):
        load_annotations(badj)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(AnnotationError, match="the file is empty"):
        load_annotations(empty)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(AnnotationError, match="expected a mapping, got a list"):
        load_annotations(lst)
    with pytest.raises(FileNotFoundError):
        load_annotations(tmp_path / "missing.yaml")


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_save_and_load_round_trip(tmp_path, suffix):
    ann = parse_annotations({
        "version": 1, "origin": 100.0, "description": "d",
        "tasks": [_task(threshold=0.4, window=3, cooldown=2, events=[[1, 2], {"start": 3, "end": 4, "text": "x"}]),
                  _task(id="p", metric="po", tolerance=1.5, events=[7]),
                  _task(id="c", metric="crr", ask_time=2, clue_time=6)],
        "queries": [{"id": "a", "time": 3, "text": "Who?", "answers": ["Bob"], "clue_time": 4}],
    })
    path = tmp_path / f"out.{suffix}"
    save_annotations(ann, path)
    back = load_annotations(path)
    assert isinstance(back, Annotations)
    assert back.tasks == ann.tasks and back.queries == ann.queries
    assert (back.origin, back.description) == (100.0, "d")
