"""Held-out evaluation of ROMA-tiny with OUR evaluator (roma_ros.eval.metrics).

Generated streams (a seed different from training) run through the offline path: the real
RomaModel behind a StreamSession (the class the engine node and `roma eval` drive), one unit at a
time, with the task set as a standing instruction and questions asked at their times. What the
session produced is recorded as a BagResult exactly as roma_ros.eval.runner records a bag, and
scored with metrics.evaluate against an Annotations object built from the stream's ground truth.

Suites (one task per stream: ROMA has one speak head, so concurrent tasks share one probability):
- alert streams for cat (visual), alarm (sound) and help (speech): PA rule, per-task window/threshold;
- narration streams ("Tell me when the scene changes."): narration F1, windows [change, change+3);
- every stream carries two reactive questions ("what do you see/hear?") scored by QA accuracy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from roma_ros.core.triggers import TriggerRule
from roma_ros.eval.annotations import parse_annotations
from roma_ros.eval.metrics import combine, evaluate
from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord
from roma_ros.training import data
from roma_ros.core.unit import NS_PER_S as NS

# Decision rules ROMA-tiny is evaluated (and recommended) with.
RULES = {"alert": TriggerRule(0.5, 2, 0.0, "alert"), "narration": TriggerRule(0.5, 1, 2.0, "narration")}
ALERT_CONDS = ("cat", "alarm", "help")
NARRATION_WINDOW_S = 3.0


@dataclass
class Case:
    name: str
    stream: data.Stream
    annotations: dict  # docs/annotations.md schema (version 1)


def _queries(stream: data.Stream, rng: np.random.Generator, n: int = 2) -> list[dict]:
    """Questions asked in the middle of unit k whose content stays the same in unit k+1."""
    ok = [k for k in range(2, len(stream.units) - 2)
          if stream.objects[k] == stream.objects[k + 1] and stream.sounds[k] == stream.sounds[k + 1]
          and not stream.change[k + 1]]
    out = []
    for j, k in enumerate(sorted(rng.choice(ok, size=min(n, len(ok)), replace=False))):
        if j % 2 == 0:
            q = {"text": data.SEE_QUESTIONS[0], "answers": data.SEE_ACCEPT[stream.objects[k + 1]]}
        else:
            q = {"text": data.HEAR_QUESTIONS[0], "answers": data.HEAR_ACCEPT[stream.sounds[k + 1]]}
        out.append({"id": f"q{j}", "time": float(k) + 0.5, **q})
    return out


def make_cases(seed: int, n_per_task: int = 2, n_units: int = 40, split: str = "all") -> list[Case]:
    """`split`: which assets the streams use ("train": those seen in training, with a new seed;
    "heldout": voices, a background and object positions never seen in training)."""
    gen = data.StreamGenerator(seed, split=split)
    rng = np.random.default_rng(seed + 7)
    cases = []
    for task in (*ALERT_CONDS, "narration"):
        made = 0
        while made < n_per_task:
            s = gen.stream(n_units, focus=None if task == "narration" else task)
            if task == "narration":
                changes = [k for k, c in enumerate(s.change) if c]
                if not changes:
                    continue
                events = []
                for j, k in enumerate(changes):
                    end = min(k + NARRATION_WINDOW_S, changes[j + 1] if j + 1 < len(changes) else n_units)
                    events.append({"start": float(k), "end": float(end),
                                   "text": data.NARRATION[s.objects[k]]})
                t = {"id": "scene", "instruction": data.NARRATION_INSTRUCTIONS[0], "mode": "narration",
                     "threshold": RULES["narration"].threshold, "window": RULES["narration"].window,
                     "cooldown": RULES["narration"].cooldown_s, "events": events}
            else:
                ev = data.runs(s.label(task))
                if not ev or any(b - a < RULES["alert"].window for a, b in ev):
                    continue
                t = {"id": task, "instruction": data.alert_instruction([task]), "mode": "alert", "metric": "pa",
                     "threshold": RULES["alert"].threshold, "window": RULES["alert"].window,
                     "cooldown": RULES["alert"].cooldown_s, "events": [[float(a), float(b)] for a, b in ev]}
            ann = {"version": 1, "description": f"held-out {task} stream {made}", "tasks": [t],
                   "queries": _queries(s, rng)}
            cases.append(Case(f"{task}_{made}", s, ann))
            made += 1
    return cases


def run_case(model, case: Case) -> BagResult:
    """Drive a StreamSession over the case's units; record what it did like eval.runner does."""
    from roma_ros.engine.session import StreamSession

    model.reset()
    model.set_instructions([])
    session = StreamSession(model)
    ann = parse_annotations(case.annotations, case.name)
    result = BagResult(name=case.name, origin=0.0)
    for q in ann.queries:
        session.ask(q.text, q.id, round(q.time * NS))
    pending = sorted(ann.tasks, key=lambda t: t.ask_time)
    for unit in case.stream.units:
        while pending and unit.end_ns / NS > pending[0].ask_time:
            t = pending.pop(0)
            session.set_task(t.id, t.instruction, t.mode, t.threshold, t.window, t.cooldown)
        step = session.process(unit)
        result.units.append(UnitRecord(unit.index, unit.start_ns / NS, unit.end_ns / NS, step.probability,
                                       [tr.task_id for tr in step.triggers]))
        for tr in step.triggers:
            task = session.tasks.get(tr.task_id)
            text = next((a.text for a in step.alerts if a.task_id == tr.task_id), "")
            result.alerts.append(AlertRecord(tr.task_id, tr.time_ns / NS, tr.unit_index, tr.prob,
                                             tr.window_start_ns / NS, text or task.instruction, tr.mode))
        for st in step.chunks:
            c = st.chunk
            result.replies.append(ReplyRecord(c.query_id, st.time_ns / NS, c.text, c.final, unit.index))
            result.answers[c.query_id] = result.answers.get(c.query_id, "") + c.text
    # narration text: attach the generated reply to the trigger (the report's text similarity)
    for a in result.alerts:
        if a.mode == "narration":
            a.text = "".join(r.text for r in result.replies if r.query_id == f"narration/{a.task_id}"
                             and abs(r.time_s - a.time_s) < 1e-6) or a.text
    result.duration_s = case.stream.units[-1].end_ns / NS - case.stream.units[0].start_ns / NS
    return result


def summarize(per_bag: list[dict]) -> dict:
    """The headline numbers of `combine(...)` (the model card's table and metrics.json)."""
    c = combine(per_bag)
    o = c["overall"]
    minutes = o["false_alarms"]["hours"] * 60
    return {
        "streams": len(per_bag), "stream_seconds": c["duration_s"],
        "alert_success_rate_pa": o["pa"]["rate"], "alert_events": o["pa"]["n"],
        "false_alarms_per_minute": o["false_alarms"]["count"] / minutes if minutes else None,
        "false_alarms": o["false_alarms"]["count"],
        "median_detection_delay_s": o["detection_delay"]["median"],
        "narration_f1": o["narration"]["f1"], "narration_precision": o["narration"]["precision"],
        "narration_recall": o["narration"]["recall"],
        "qa_accuracy": o["qa"]["accuracy"], "qa_questions": o["qa"]["n"],
    }


def evaluate_model(model, seed: int, n_per_task: int = 2, n_units: int = 40, per_task: bool = True,
                   split: str = "all") -> dict:
    cases = make_cases(seed, n_per_task, n_units, split)
    per_bag, by_task = [], {}
    for case in cases:
        res = run_case(model, case)
        m = evaluate(res, parse_annotations(case.annotations, case.name), thresholds=None)
        per_bag.append(m)
        by_task.setdefault(case.name.rsplit("_", 1)[0], []).append(m)
    out = {"seed": seed, "split": split, "n_per_task": n_per_task, "n_units": n_units, "overall": summarize(per_bag)}
    if per_task:
        out["per_task"] = {k: summarize(v) for k, v in by_task.items()}
    out["rules"] = {k: {"threshold": r.threshold, "window": r.window, "cooldown_s": r.cooldown_s}
                    for k, r in RULES.items()}
    return out


# The regression subset tests/test_roma_tiny.py re-measures (small and short: it must run in seconds).
REGRESSION = {"seed": 4242, "n_per_task": 2, "n_units": 30}


def record_regression(model_dir, model=None) -> dict:
    """Measure the regression subset and store it in <model_dir>/metrics.json under "regression"."""
    from pathlib import Path

    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.roma import RomaModel

    path = Path(model_dir) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    model = model or RomaModel.load(EngineConfig(model_path=str(model_dir)))
    reg = evaluate_model(model, REGRESSION["seed"], REGRESSION["n_per_task"], REGRESSION["n_units"], per_task=False)
    metrics["regression"] = {**REGRESSION, "overall": reg["overall"]}
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics["regression"]


def main(argv=None):
    import argparse

    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import load_model

    ap = argparse.ArgumentParser(description="held-out metrics of a ROMA-tiny checkpoint")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--split", default="train", choices=data.SPLITS,
                    help="assets: train (seen in training, new seed), heldout (never seen), all")
    ap.add_argument("--out", default="")
    ap.add_argument("--record", default="", help="store the regression subset in DIR/metrics.json")
    a = ap.parse_args(argv)
    if a.record:
        print(json.dumps(record_regression(a.record), indent=1))
        return
    model = load_model(EngineConfig(model_path=a.model))
    res = evaluate_model(model, a.seed, a.n, a.units, split=a.split)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
