"""`roma tune` demonstrated on ROMA-tiny: teach it an alert it was never trained to give.

ROMA-tiny was trained to alert on a cat, the alarm and calls for help; rockets appear in its
streams only as distractors. This script generates annotated bags (data.StreamGenerator scenes,
written with scenes.write_units_bag): training bags from the training assets and, disjoint from
them, validation bags from other seeds and the held-out assets (voices, a background and object
positions never used in training). Each bag carries one task: "Alert me when a rocket appears."
or, in the validation set, one of ROMA-tiny's own tasks (cat, alarm, help, narration). The overlay
decides for the rocket instruction only (`--scope tasks`), so the base tasks keep the checkpoint's
head; the held-out evaluation with and without the overlay shows it.

    python -m roma_ros.training.tune_demo --out /tmp/tune_demo      # bags, `roma tune`, figures

It then runs `roma tune` and the model card's held-out evaluation with and without the overlay,
and writes summary.json with the figures the README quotes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from roma_ros.training import data
from roma_ros.training.evaluate import RULES, make_cases
from roma_ros.training.scenes import write_units_bag

NEW_TASK = "rocket"
ORIGIN_S = 1_700_000_000
UNITS = 60


def rocket_annotations(stream: data.Stream, name: str) -> dict:
    rule = RULES["alert"]
    events = [[float(a), float(b)] for a, b in data.runs(stream.label(NEW_TASK))]
    return {"version": 1, "origin": float(ORIGIN_S), "description": f"{name}: rockets come and go",
            "tasks": [{"id": NEW_TASK, "instruction": data.alert_instruction([NEW_TASK]), "mode": "alert",
                       "metric": "pa", "threshold": rule.threshold, "window": rule.window,
                       "cooldown": rule.cooldown_s, "events": events}]}


def make_bags(out: Path, seed: int, split: str, n_new: int, n_base_per_task: int, units: int = UNITS) -> list[Path]:
    """`n_new` rocket bags and `n_base_per_task` bags of each base task; returns the bag folders
    (each with its annotations.yaml)."""
    from roma_ros.eval.annotations import parse_annotations, save_annotations

    gen = data.StreamGenerator(seed, split=split)
    made: list[Path] = []

    def write(name: str, stream: data.Stream, ann: dict):
        folder = out / name
        write_units_bag(folder, stream.units, ORIGIN_S * 1_000_000_000)
        save_annotations(parse_annotations(ann, name), folder / "annotations.yaml")
        made.append(folder)

    k = 0
    while k < n_new:
        s = gen.stream(units, focus=NEW_TASK)
        runs = data.runs(s.label(NEW_TASK))
        if not runs or any(b - a < RULES["alert"].window for a, b in runs):
            continue  # an event shorter than the decision window cannot be caught
        write(f"{split}_{seed}_{NEW_TASK}_{k}", s, rocket_annotations(s, f"{NEW_TASK} {k}"))
        k += 1
    if n_base_per_task:
        for case in make_cases(seed + 1, n_base_per_task, units, split):
            ann = dict(case.annotations, origin=float(ORIGIN_S), queries=[])
            write(f"{split}_{seed}_{case.name}", case.stream, ann)
    return made


def _roma(*args: str) -> None:
    cmd = [sys.executable, "-m", "roma_ros.cli", *args]
    print("$ roma " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the bags, the overlay and the figures")
    ap.add_argument("--train-new", type=int, default=40, help="training bags with rockets")
    ap.add_argument("--train-base", type=int, default=0, help="training bags per base task (cat, alarm, help, narration)")
    ap.add_argument("--val-new", type=int, default=10)
    ap.add_argument("--val-base", type=int, default=2)
    ap.add_argument("--seed", type=int, default=31000)
    ap.add_argument("--heldout-seed", type=int, default=9000, help="the model card's held-out evaluation seed")
    a = ap.parse_args(argv)
    out = Path(a.out)
    t0 = time.perf_counter()
    train = make_bags(out / "bags", a.seed, "train", a.train_new, a.train_base)
    val = make_bags(out / "bags", a.seed + 500, "heldout", a.val_new, a.val_base)
    made_s = time.perf_counter() - t0
    tuned = out / "tuned"
    t1 = time.perf_counter()
    _roma("tune", *map(str, train), "--val", *map(str, val), "-o", str(tuned), "--force")
    tune_s = time.perf_counter() - t1
    report = json.loads((tuned / "report.json").read_text())

    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import load_model
    from roma_ros.training.evaluate import evaluate_model

    heldout = {}
    for name, head in (("base", ""), ("tuned", str(tuned / "speak_head.safetensors"))):
        model = load_model(EngineConfig(model_path="embedded", speak_head=head))
        heldout[name] = evaluate_model(model, a.heldout_seed, 4, 40, split="heldout")
    summary = {"train_bags": len(train), "val_bags": len(val), "units_per_bag": UNITS,
               "generate_s": made_s, "tune_s": tune_s, "rocket": report["tasks"].get(NEW_TASK),
               "base_tasks_val": {k: v for k, v in report["tasks"].items() if k != NEW_TASK},
               "cost": report["cost"], "training": {k: v for k, v in report["training"].items() if k != "history"},
               "heldout": {k: {"overall": v["overall"], "per_task": v.get("per_task")} for k, v in heldout.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    b, t = heldout["base"]["overall"], heldout["tuned"]["overall"]
    print(json.dumps({"rocket_before": summary["rocket"]["before"], "rocket_after": summary["rocket"]["after"],
                      "heldout_base": {k: b[k] for k in ("alert_success_rate_pa", "false_alarms_per_minute", "narration_f1", "qa_accuracy")},
                      "heldout_tuned": {k: t[k] for k in ("alert_success_rate_pa", "false_alarms_per_minute", "narration_f1", "qa_accuracy")}},
                     indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
