"""`roma tune` and speak-head overlays: features equal what the engine computed, overlays change
decisions wherever a model is loaded, a wrong base is refused, bad input fails before model work."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.engine.config import EngineConfig
from roma_ros.engine.factory import embedded_model_path, load_model
from roma_ros.engine.head_overlay import (OverlayError, checkpoint_fingerprint, checkpoint_head, read_overlay,
                                          save_overlay)
from roma_ros.eval.annotations import Event, Task
from roma_ros.core.triggers import TriggerRule
from roma_ros.training.tune_demo import make_bags
from roma_ros.tuning.features import TaskFeatures
from roma_ros.tuning.train_head import weighted_units

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "roma_ros" / "data" / "sample"


def roma(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roma_ros.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    train = make_bags(root / "bags", 500, "train", 2, 1, units=24)
    val = make_bags(root / "bags", 900, "heldout", 1, 1, units=24)
    return root, train, val


@pytest.fixture(scope="module")
def model():
    return load_model(EngineConfig(model_path="embedded"))


def always_speaking_overlay(path: Path, model, fingerprint: str | None = None) -> Path:
    head = checkpoint_head(model)
    with torch.no_grad():
        head.fc2.bias.fill_(30.0)  # p ~ 1 whatever the states
    return save_overlay(path, head, fingerprint or checkpoint_fingerprint(embedded_model_path()), {"tasks": "everything"})


def test_cached_features_are_the_engines_own_speak_head_inputs(bags, model, tmp_path):
    """The base head applied to the cached states gives exactly the probabilities `roma eval`
    writes for the same bag and task (and the live graph equals `roma eval`: test_determinism)."""
    from roma_ros.eval.evaluate_bags import replay_settings
    from roma_ros.eval.annotations import load_annotations
    from roma_ros.tuning.features import FeatureExtractor
    from roma_ros.tuning.train_head import head_probs

    _root, train, _val = bags
    bag = train[0]
    out = tmp_path / "eval"
    r = roma("eval", str(bag), "-o", str(out))
    assert r.returncode == 0, r.stderr
    with open(out / bag.name / "units.csv") as f:
        evaluated = [float(row["prob"]) for row in csv.DictReader(f)]

    engine_p, sync_p = replay_settings(str(REPO / "config" / "roma.yaml"), {}, 0)
    extractor = FeatureExtractor(engine_p, sync_p, tmp_path / "cache")
    ann = load_annotations(bag / "annotations.yaml")
    feats, cached = extractor.extract(bag, ann.tasks[0], ann.origin)
    assert not cached and feats.states.shape[1:] == (4, 128)
    assert len(feats.base_probs) == len(evaluated)
    np.testing.assert_allclose(feats.base_probs, evaluated, atol=1e-6)
    np.testing.assert_allclose(head_probs(checkpoint_head(model), feats), feats.base_probs, atol=1e-6)
    again, cached = extractor.extract(bag, ann.tasks[0], ann.origin)
    assert cached and np.array_equal(again.states, feats.states)
    # another instruction is another context: other states, another cache entry
    other = Task("other", "Alert me when a cat appears.", events=list(ann.tasks[0].events))
    feats_other, cached = extractor.extract(bag, other, ann.origin)
    assert not cached and not np.allclose(feats_other.states, feats.states)


def test_roma_tune_writes_an_overlay_a_report_and_reuses_its_features(bags):
    root, train, val = bags
    out = root / "tuned"
    args = ["tune", *map(str, train), "--val", *map(str, val), "-o", str(out), "--epochs", "60"]
    r = roma(*args)
    assert r.returncode == 0, r.stderr
    for name in ("speak_head.safetensors", "report.json", "report.md", "report.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert set(report["tasks"]) == {"rocket", "cat", "alarm", "help", "scene"}
    for task in report["tasks"].values():
        assert {"before", "after", "sweep_before", "sweep_after", "recommended"} <= set(task)
        assert task["sweep_after"]["table"] and task["recommended"]["window"] >= 1
    n_passes = len(train) + len(val)
    assert report["cost"]["extracted_units"] == 24 * n_passes and report["cost"]["passes_from_cache"] == 0
    assert report["training"]["history"][0]["val_loss"] >= min(h["val_loss"] for h in report["training"]["history"])
    tensors, meta = read_overlay(out / "speak_head.safetensors")
    assert set(tensors) == {"gate_mixer.logits", "gate_head_pro_fc1.weight", "gate_head_pro_fc1.bias",
                            "gate_head_pro_fc2.weight", "gate_head_pro_fc2.bias"}
    assert meta["base_fingerprint"] == checkpoint_fingerprint(embedded_model_path()) == report["base"]["fingerprint"]
    assert "rocket" in meta["tasks"]
    # the base checkpoint is untouched, and the second run replays nothing
    assert "gate_head_pro_fc1.weight" not in {p.name for p in embedded_model_path().iterdir()}
    again = roma(*args, "--force")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "report.json").read_text())["cost"]["passes_from_cache"] == n_passes
    retrained, _ = read_overlay(out / "speak_head.safetensors")  # same seed, same features: same head
    assert all(torch.equal(tensors[k], retrained[k]) for k in tensors)
    refused = roma(*args)
    assert refused.returncode == 2 and "exists" in refused.stderr


def test_an_overlay_changes_decisions_in_eval_and_is_compared_with_the_base_in_one_run(model, tmp_path):
    overlay = always_speaking_overlay(tmp_path / "always.safetensors", model)
    tuned = load_model(EngineConfig(model_path="embedded", speak_head=str(overlay)))
    assert tuned.speak_head_source.startswith("overlay")
    out = tmp_path / "eval"
    ann = str(SAMPLE / "annotations.yaml")
    r = roma("eval", str(SAMPLE / "bag"), "--annotations", ann, "--speak-head", str(overlay), "--compare-head", "base",
             "-o", str(out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "bag" / "metrics.json").read_text())
    assert metrics["speak_head"].startswith("overlay")
    with open(out / "bag" / "units.csv") as f:
        assert all(float(row["prob"]) > 0.999 for row in csv.DictReader(f))
    safety = metrics["tasks"]["safety"]
    compare = metrics["compare"]["tasks"]["safety"]
    # p ~ 1 everywhere fires outside the events too; the base head on the same replay does not
    assert safety["false_alarms"]["count"] > 0
    assert compare["false_alarms_per_hour"] == 0 and compare["success"] == 1.0
    base_run = tmp_path / "base"
    assert roma("eval", str(SAMPLE / "bag"), "--annotations", ann, "-o", str(base_run)).returncode == 0
    with open(base_run / "bag" / "units.csv") as f, open(out / "bag" / "compare" / "units.csv") as g:
        base_probs = [float(row["prob"]) for row in csv.DictReader(f)]
        compared = [float(row["prob"]) for row in csv.DictReader(g)]
    np.testing.assert_allclose(compared, base_probs, atol=2e-6)
    assert "compared head: base" in r.stdout


def test_the_speak_head_parameter_reaches_every_entry_point(model, tmp_path):
    import argparse

    from roma_ros.cli import build_parser, run_overrides
    from roma_ros.params import OVERRIDABLE
    from roma_ros.pipeline.engine import PARAMETERS, engine_config

    overlay = str(always_speaking_overlay(tmp_path / "always.safetensors", model))
    assert engine_config(lambda n: overlay if n == "speak_head" else PARAMETERS[n][0]).speak_head == overlay
    assert "speak_head" in OVERRIDABLE["engine"]
    parser = build_parser()
    for command in (["run"], ["demo"], ["eval", "bag"], ["doctor"]):
        args = parser.parse_args(command + ["--speak-head", overlay])
        assert args.speak_head == overlay, command
    args = parser.parse_args(["run", "--speak-head", overlay])
    _sync, engine = run_overrides(args)
    assert {p.name: p.value for p in engine}["speak_head"] == overlay
    assert isinstance(args, argparse.Namespace)


def test_the_engine_node_loads_an_overlay_and_reports_it(model, tmp_path):
    import rclpy
    from rclpy.parameter import Parameter

    from roma_ros.nodes.engine_node import EngineNode

    overlay = always_speaking_overlay(tmp_path / "always.safetensors", model)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = EngineNode(context=context, namespace="tune", parameter_overrides=[
            Parameter("autostart", value=False), Parameter("speak_head", value=str(overlay))])
        try:
            node.trigger_configure()
            assert node.session is not None, node.configure_error
            assert node.session.model.speak_head_source.startswith("overlay")
            assert node.diagnostics.values["speak_head"].startswith("overlay")
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_an_overlay_from_another_base_is_refused_before_the_model_loads(model, tmp_path, monkeypatch):
    from roma_ros.engine.roma import RomaModel

    wrong = always_speaking_overlay(tmp_path / "wrong.safetensors", model, fingerprint="0" * 64)

    def no_loading(*_a, **_k):
        raise AssertionError("the model was loaded before the overlay was checked")
    monkeypatch.setattr(RomaModel, "load", classmethod(no_loading))
    with pytest.raises(OverlayError, match="tuned on another checkpoint"):
        load_model(EngineConfig(model_path="embedded", speak_head=str(wrong)))
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"thinker.gate_mixer.logits": torch.zeros(4)}, str(plain))
    with pytest.raises(OverlayError, match="not a roma_ros speak-head overlay"):
        load_model(EngineConfig(model_path="embedded", speak_head=str(plain)))
    with pytest.raises(OverlayError, match="no overlay file"):
        load_model(EngineConfig(model_path="embedded", speak_head=str(tmp_path / "missing.safetensors")))
    monkeypatch.undo()
    r = roma("eval", str(SAMPLE / "bag"), "--speak-head", str(wrong), "-o", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "tuned on another checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_bad_annotations_and_bags_without_sensor_topics_fail_before_any_model_work(bags, tmp_path):
    from rosbags.rosbag2 import Writer

    from roma_ros.pipeline.typestore import typestore

    _root, train, val = bags
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntasks:\n  - id: x\n    instruction: Alert me.\n    events: [[5, 3]]\n")
    r = roma("tune", str(train[0]), "--annotations", str(bad), "--val", str(val[0]), "-o", str(tmp_path / "o1"))
    assert r.returncode == 2 and "tasks[0].events[0]" in r.stderr and "loading the model" not in r.stdout
    store = typestore()
    strings = tmp_path / "strings"
    with Writer(strings, version=9) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        w.write(conn, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    r = roma("tune", str(strings), "--annotations", str(train[0] / "annotations.yaml"), "--val", str(val[0]),
             "-o", str(tmp_path / "o2"))
    assert r.returncode == 2 and "no camera or microphone topic" in r.stderr and "loading the model" not in r.stdout
    r = roma("tune", str(train[0]), "-o", str(tmp_path / "o3"))
    assert r.returncode == 2 and "validation bags are needed" in r.stderr
    r = roma("tune", str(train[0]), "--val", str(train[0]), "-o", str(tmp_path / "o4"))
    assert r.returncode == 2 and "both in training and validation" in r.stderr
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))


def _features(task: Task, labels: list[int]) -> TaskFeatures:
    n = len(labels)
    starts = np.arange(n, dtype=float)
    return TaskFeatures("bag", task, TriggerRule(), np.zeros((n, 4, 8), np.float32), starts, starts + 1,
                        np.arange(n), np.zeros(n, bool), np.zeros(n))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=30), min_size=1, max_size=4))
def test_every_task_weighs_the_same_and_its_classes_half_each(label_sets):
    sets = []
    for k, labels in enumerate(label_sets):
        events = [Event(float(i), float(i) + 1.0) for i, v in enumerate(labels) if v]
        sets.append(_features(Task(f"t{k}", f"instruction {k}", events=events), labels))
    _x, y, w = weighted_units(sets)
    assert abs(float(w.sum()) - 1.0) < 1e-5
    offset = 0
    for labels in label_sets:
        n = len(labels)
        wt, yt = w[offset:offset + n], y[offset:offset + n]
        assert abs(float(wt.sum()) - 1 / len(label_sets)) < 1e-5
        if 0 < yt.sum() < n:
            assert abs(float(wt[yt > 0].sum()) - float(wt[yt == 0].sum())) < 1e-5
        offset += n


def test_labels_follow_the_annotated_windows_and_skip_units_before_the_task():
    task = Task("t", "i", events=[Event(2.0, 4.0)], ask_time=1.0)
    f = _features(task, [0] * 6)
    assert f.labels().tolist() == [0, 0, 1, 1, 0, 0]
    assert f.scored.tolist() == [False, True, True, True, True, True]
    point = Task("p", "i", metric="po", events=[Event(3.0, 3.0)])
    assert _features(point, [0] * 8).labels().tolist() == [0, 1, 1, 1, 1, 0, 0, 0]


def test_roma_demo_runs_with_an_overlay(model, tmp_path):
    """The demo's engine process gets the overlay: p ~ 1 on every unit fires the sample's task in
    every window, where the checkpoint's head fires only in its three events."""
    overlay = always_speaking_overlay(tmp_path / "always.safetensors", model)
    r = roma("demo", "--speak-head", str(overlay), "--rate", "2", "-o", str(tmp_path / "demo"), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    units = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert units["n_units"] == 40
    assert units["n_alerts"] >= 19  # window 2, no cooldown: every other unit (the base head: 8)
