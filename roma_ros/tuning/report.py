"""Before/after scores of a tuned speak head on validation bags: JSON, Markdown and a PNG.

Both heads are scored on the same cached units (the states do not depend on the head), with the
evaluator's own rule replay and metrics (roma_ros.eval.metrics), so "before" equals what
`roma eval` reports for those bags and "after" what it reports with the overlay loaded.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from roma_ros.eval.annotations import Annotations
from roma_ros.eval.metrics import (DEFAULT_THRESHOLDS, DEFAULT_WINDOWS, best_key, combine, evaluate,
                                   replay_triggers, rescored, score_triggers)
from roma_ros.eval.records import BagResult, UnitRecord
from roma_ros.eval.report import number_cell
from roma_ros.tuning.features import TaskFeatures


def bag_result(f: TaskFeatures, probs: Sequence[float]) -> BagResult:
    """What `roma eval` would record for this task on this bag with these probabilities."""
    units = [UnitRecord(int(i), float(s), float(e), float("nan"), restart=bool(rs))
             for i, s, e, rs in zip(f.indices, f.starts, f.ends, f.restarts)]
    return rescored(BagResult(name=Path(f.bag).name, units=units), probs, Annotations(tasks=[f.task]),
                    rules={f.task.id: f.rule})


def score(f: TaskFeatures, probs: Sequence[float]) -> dict[str, Any]:
    return evaluate(bag_result(f, probs), Annotations(tasks=[f.task]), rules={f.task.id: f.rule}, thresholds=None)


def summary(combined: dict[str, Any], metric: str) -> dict[str, Any]:
    o = combined["overall"]
    out = {"metric": metric, "false_alarms_per_hour": o["false_alarms"]["per_hour"],
           "false_alarms": o["false_alarms"]["count"], "hours": o["false_alarms"]["hours"],
           "delay_median_s": o["detection_delay"].get("median")}
    if metric == "narration":
        out["success"] = o["narration"]["f1"]
    else:
        out.update(success=o[metric]["rate"], hits=o[metric]["hits"], events=o[metric]["n"])
    return out


def pooled_sweep(sets: list[TaskFeatures], probs: list[np.ndarray], thresholds=DEFAULT_THRESHOLDS,
                 windows=DEFAULT_WINDOWS) -> dict[str, Any]:
    """The evaluator's threshold x window sweep, with the counts summed over all bags of a task
    (`fa_per_hour` added). The best row maximises F1 (ties: precision, recall, smaller window,
    higher threshold), as in `roma eval`'s sweep."""
    hours = sum(max(float(f.ends.max() - f.starts.min()), 0.0) for f in sets) / 3600.0
    table = []
    for w in sorted(set(int(w) for w in windows)):
        for thr in sorted(set(float(t) for t in thresholds)):
            tot = {"n_triggers": 0, "tp": 0, "fp": 0, "fn": 0}
            n_events = sum(len(f.task.events) for f in sets)
            for f, p in zip(sets, probs):
                trig = [t.time_s for t in replay_triggers(list(p), list(f.starts), list(f.ends), thr, w,
                                                          f.rule.cooldown_s, indices=list(f.indices),
                                                          restarts=list(f.restarts), ask_time=f.task.ask_time)]
                scoring = "narration" if f.task.metric == "narration" else "alert"
                row = score_triggers(trig, f.task.events, scoring=scoring, tolerance=f.task.effective_tolerance)
                for k in tot:
                    tot[k] += row[k]
            precision = tot["tp"] / (tot["tp"] + tot["fp"]) if tot["tp"] + tot["fp"] else 1.0
            recall = (n_events - tot["fn"]) / n_events if n_events else 1.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            table.append({"threshold": thr, "window": w, **tot, "precision": precision, "recall": recall,
                          "f1": f1, "fa_per_hour": tot["fp"] / hours if hours > 0 else None})
    return {"table": table, "best": max(table, key=best_key) if table else None}


def compare(val: list[TaskFeatures], before: list[np.ndarray], after: list[np.ndarray]) -> dict[str, Any]:
    """Per task (pooled over its validation bags): before/after scores and sweeps."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(val):
        groups[f.task.id].append(i)
    out = {}
    for task_id, members in groups.items():
        task = val[members[0]].task
        entry = {"instruction": task.instruction, "mode": task.mode, "metric": task.metric,
                 "rule": {"threshold": val[members[0]].rule.threshold, "window": val[members[0]].rule.window,
                          "cooldown_s": val[members[0]].rule.cooldown_s},
                 "bags": [Path(val[i].bag).name for i in members]}
        for name, probs in (("before", before), ("after", after)):
            combined = combine([score(val[i], probs[i]) for i in members])
            entry[name] = summary(combined, task.metric)
            entry[f"sweep_{name}"] = pooled_sweep([val[i] for i in members], [probs[i] for i in members])
        best = entry["sweep_after"]["best"]
        entry["recommended"] = {"threshold": best["threshold"], "window": best["window"],
                                "precision": best["precision"], "recall": best["recall"],
                                "fa_per_hour": best["fa_per_hour"]} if best else None
        out[task_id] = entry
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Speak-head tuning report", "",
             f"Base checkpoint: `{report['base']['model_path']}` (fingerprint `{report['base']['fingerprint'][:12]}`); "
             f"overlay: `{report['overlay']}`.", "",
             "The overlay decides for " + ("every task (it replaces the checkpoint's head)."
                                          if report["applies_to"] == "*" else
                                          "these instructions only; every other task keeps the checkpoint's head: "
                                          + "; ".join(f'"{t}"' for t in report["applies_to"]) + "."), "",
             f"Training: {report['training']['train_units']} units from {report['training']['train_sets']} "
             f"(bag, task) pairs, validation {report['training']['val_units']} units; best epoch "
             f"{report['training']['best_epoch']} of {report['training']['epochs_run']}, "
             f"{report['training']['seconds']:.1f} s.", "",
             "## Validation bags, before -> after (each task's own decision rule)", "",
             "| task | metric | success | false alarms / h | median delay (s) | recommended threshold x window |",
             "|---|---|---|---|---|---|"]
    for task_id, t in report["tasks"].items():
        b, a, rec = t["before"], t["after"], t["recommended"]
        rec_txt = (f"{rec['threshold']:.2f} x {rec['window']} (precision {rec['precision']:.2f}, recall "
                   f"{rec['recall']:.2f}, {number_cell(rec['fa_per_hour'], '{:.1f}')} false alarms / h)") if rec else "-"
        lines.append(f"| `{task_id}` | {t['metric']} | {number_cell(b['success'], '{:.2f}')} -> {number_cell(a['success'], '{:.2f}')} | "
                     f"{number_cell(b['false_alarms_per_hour'], '{:.1f}')} -> {number_cell(a['false_alarms_per_hour'], '{:.1f}')} | "
                     f"{number_cell(b['delay_median_s'], '{:.1f}')} -> {number_cell(a['delay_median_s'], '{:.1f}')} | {rec_txt} |")
    lines += ["", "Success is the task's metric over its validation events (PA: the share of events with a "
              "trigger inside them; narration: timing F1). The recommended operating point comes from the "
              "threshold x window sweep of the tuned head over the pooled validation bags: every pair is "
              "replayed with the engine's decision rule, and the pair with the best F1 of "
              "(triggers inside an event, events with a trigger) is recommended (ties: precision, recall, "
              "smaller window, higher threshold). Set it per task with `set_task` (threshold, window).", ""]
    return "\n".join(lines)


def plot(path: Path, val: list[TaskFeatures], before: list[np.ndarray], after: list[np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first: dict[str, int] = {}
    for i, f in enumerate(val):
        first.setdefault(f.task.id, i)
    rows = list(first.items())
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.2 * len(rows)), squeeze=False)
    for ax, (task_id, i) in zip(axes[:, 0], rows):
        f = val[i]
        mid = (f.starts + f.ends) / 2
        for e in f.task.events:
            ax.axvspan(e.start, max(e.end, e.start + 0.3), color="tab:green", alpha=0.2, lw=0)
        ax.plot(mid, before[i], color="tab:gray", lw=1.2, label="base head")
        ax.plot(mid, after[i], color="tab:blue", lw=1.5, label="tuned head")
        ax.axhline(f.rule.threshold, color="tab:red", lw=0.8, ls="--", label="threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("p(speak)")
        ax.set_title(f"{task_id}: {f.task.instruction}  ({Path(f.bag).name}; green: annotated events)",
                     fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("stream time (s)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def write(out_dir: Path, report: dict[str, Any], val, before, after) -> None:
    for name, text in (("report.json", json.dumps(report, indent=1, default=float)), ("report.md", markdown(report))):
        tmp = out_dir / (name + ".partial")
        tmp.write_text(text)
        tmp.replace(out_dir / name)
    plot(out_dir / "report.png", val, before, after)
