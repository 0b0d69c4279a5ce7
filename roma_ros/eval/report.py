"""Evaluation outputs: per-bag files, a PNG timeline, and summary tables.

Per bag, `write_outputs(out_dir, ...)` writes into out_dir:
- units.csv      index,start_s,end_s,prob,fired   (fired = ';'-joined task ids; prob empty if none;
                 a prob.<task id> column for each task decided by a tuned head of its own)
- alerts.jsonl   one AlertRecord per line
- replies.jsonl  one ReplyRecord per line
- metrics.json   the `metrics.evaluate` result
- result.json    the whole BagResult (re-score later without the model: BagResult.load)
- timeline.png   probability, per-task thresholds, triggers, ground truth, queries and answers
Across bags, `write_summary(out_dir, results)` writes summary.json (per-bag overall metrics plus
the micro-aggregated `metrics.combine`) and prints the tables of `format_summary`.
Times are seconds since the stream origin.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from roma_ros.eval.metrics import combine

UNITS_CSV = "units.csv"
ALERTS_JSONL = "alerts.jsonl"
REPLIES_JSONL = "replies.jsonl"
METRICS_JSON = "metrics.json"
RESULT_JSON = "result.json"
TIMELINE_PNG = "timeline.png"
SUMMARY_JSON = "summary.json"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_outputs(out_dir: str | Path, bag_result: Any, metrics: Mapping[str, Any], annotations: Any = None,
                  *, timeline: bool = True) -> dict[str, Path]:
    """Write one bag's files (see the module docstring) into out_dir; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (UNITS_CSV, ALERTS_JSONL, REPLIES_JSONL, METRICS_JSON, RESULT_JSON)}
    with paths[UNITS_CSV].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        own = sorted({tid for u in bag_result.units for tid in u.task_probs})  # tasks with a tuned head
        w.writerow(["index", "start_s", "end_s", "prob", "fired"] + [f"prob.{tid}" for tid in own])
        for u in sorted(bag_result.units, key=lambda u: u.index):
            w.writerow([u.index, f"{u.start_s:.3f}", f"{u.end_s:.3f}", _prob_cell(u.prob), ";".join(u.fired_task_ids)]
                       + [_prob_cell(u.task_probs.get(tid)) for tid in own])
    with paths[ALERTS_JSONL].open("w", encoding="utf-8") as f:
        for a in sorted(bag_result.alerts, key=lambda a: a.time_s):
            f.write(json.dumps(_clean(a.to_dict()), allow_nan=False) + "\n")
    with paths[REPLIES_JSONL].open("w", encoding="utf-8") as f:
        for r in sorted(bag_result.replies, key=lambda r: r.time_s):
            f.write(json.dumps(_clean(r.to_dict()), allow_nan=False) + "\n")
    _dump_json(paths[METRICS_JSON], metrics)
    _dump_json(paths[RESULT_JSON], bag_result.to_dict())
    if timeline:
        paths[TIMELINE_PNG] = plot_timeline(out / TIMELINE_PNG, bag_result, metrics, annotations)
    return paths


# --- timeline ----------------------------------------------------------------------------------------


def _prob_cell(p: float | None) -> str:
    return "" if p is None or math.isnan(p) else f"{p:.6f}"


def _short(text: str | None, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _prob_line(units: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Stairs of per-unit probabilities, broken (NaN) at gaps between units."""
    xs: list[float] = []
    ys: list[float] = []
    prev_end = None
    for u in sorted(units, key=lambda u: u.start_s):
        if prev_end is not None and abs(u.start_s - prev_end) > 1e-6:
            xs.append(math.nan)
            ys.append(math.nan)
        p = math.nan if u.prob is None else u.prob
        xs += [u.start_s, u.end_s]
        ys += [p, p]
        prev_end = u.end_s
    return xs, ys


def plot_timeline(path: str | Path, bag_result: Any, metrics: Mapping[str, Any] | None = None,
                  annotations: Any = None) -> Path:
    """A PNG timeline of one bag.

    Top panel: speak probability per unit (stairs), each task's threshold (dashed, task colour),
    each alert (triangle at its probability), ground-truth windows shaded in task colours.
    Middle: one lane per task: GT windows as bars (points as diamonds with their tolerance), alerts
    as ticks (black inside a GT window, red x = false alarm), CRR ask/clue marks.
    Bottom (when there are queries): question marks with their text and the answer mark at the
    first reply chunk, green when correct, red when wrong, grey when not scored.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    metrics = metrics or {}
    tasks = list(getattr(annotations, "tasks", []) or [])
    queries = list(getattr(annotations, "queries", []) or [])
    task_ids = [t.id for t in tasks]
    for a in bag_result.alerts:  # alerts of tasks the annotations do not know still get a lane
        if a.task_id not in task_ids:
            task_ids.append(a.task_id)
    task_by_id = {t.id: t for t in tasks}
    tmetrics = metrics.get("tasks", {})
    cmap = plt.get_cmap("tab10")
    color = {tid: cmap(i % 10) for i, tid in enumerate(task_ids)}

    duration = float(bag_result.stream_duration_s)
    marks = [a.time_s for a in bag_result.alerts] + [r.time_s for r in bag_result.replies]
    marks += [e.end for t in tasks for e in t.events] + [q.time for q in queries]
    marks += [t.clue_time for t in tasks if t.clue_time is not None]
    x_max = max([duration, *marks]) or 1.0
    width = max(10.0, min(24.0, 6.0 + x_max / 20.0))
    n_lanes = max(1, len(task_ids))
    heights = [3.0, 0.45 * n_lanes + 0.5] + ([1.6] if queries else [])
    fig, axes = plt.subplots(len(heights), 1, sharex=True, figsize=(width, sum(heights) + 1.1),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = axes[:, 0]
    ax_p, ax_t = axes[0], axes[1]

    # -- probability panel
    xs, ys = _prob_line(bag_result.units)
    if xs:
        ax_p.plot(xs, ys, color="0.25", lw=1.2, label="p(speak)")
    by_threshold: dict[float, list[str]] = {}  # tasks sharing a threshold share one line
    for tid in task_ids:
        task = task_by_id.get(tid)
        rule = tmetrics.get(tid, {}).get("rule")
        threshold = rule["threshold"] if rule else (task.threshold if task is not None else None)
        if threshold is not None:
            w = f" w={rule['window']}" if rule else ""
            by_threshold.setdefault(float(threshold), []).append(f"{tid}{w}")
            if len(by_threshold[float(threshold)]) == 1:
                by_threshold[float(threshold)].insert(0, tid)  # colour owner
    for threshold, (owner, *names) in sorted(by_threshold.items(), reverse=True):
        ax_p.axhline(threshold, color=color[owner], ls="--", lw=1.0,
                     label=f"thr {threshold:g}: {_short(', '.join(names), 40)}")
    for tid in task_ids:
        task = task_by_id.get(tid)
        if task is not None:
            tol = task.effective_tolerance
            for e in task.events:
                if e.is_point:
                    ax_p.axvspan(e.start - tol, e.end + tol, color=color[tid], alpha=0.10, lw=0)
                    ax_p.axvline(e.start, color=color[tid], alpha=0.6, lw=1.0)
                else:
                    ax_p.axvspan(e.start, e.end, color=color[tid], alpha=0.15, lw=0)
        at = [(a.time_s, a.probability) for a in bag_result.alerts if a.task_id == tid]
        if at:
            ax_p.scatter([t for t, _ in at], [1.0 if p is None or math.isnan(p) else p for _, p in at],
                         marker="v", s=55, color=color[tid], edgecolor="black", linewidth=0.6, zorder=5)
    ax_p.set_ylim(-0.02, 1.08)
    ax_p.set_ylabel("speak probability")
    ax_p.grid(True, axis="y", alpha=0.3)
    handles, labels = ax_p.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="v", ls="", color="0.5", markeredgecolor="black", label="alert / narration"))
    ax_p.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    # -- task lanes
    yticks, ylabels = [], []
    for row, tid in enumerate(task_ids):
        y = n_lanes - 1 - row
        task = task_by_id.get(tid)
        tm = tmetrics.get(tid, {})
        label = tid
        if task is not None:
            label = f"{tid} [{task.metric}]"
            if "success" in tm:
                label += f"  {tm['success']['hits']}/{tm['success']['n']}"
            elif "narration" in tm:
                label += f"  F1 {tm['narration']['f1']:.2f}"
            tol = task.effective_tolerance
            bars = [(e.start, e.end - e.start) for e in task.events if not e.is_point]
            if bars:
                ax_t.broken_barh(bars, (y - 0.3, 0.6), facecolors=color[tid], alpha=0.35, edgecolor=color[tid])
            for e in task.events:
                if e.is_point:
                    ax_t.plot([e.start - tol, e.start + tol], [y, y], color=color[tid], lw=3, alpha=0.4)
                    ax_t.plot([e.start], [y], marker="D", color=color[tid], ms=6)
            if task.metric == "crr":
                ax_t.plot([task.ask_time], [y], marker="o", color="tab:blue", ms=6)
                ax_t.annotate("ask", (task.ask_time, y), xytext=(0, 7), textcoords="offset points",
                              ha="center", fontsize=7)
                ax_t.plot([task.clue_time], [y], marker="*", color="goldenrod", ms=10)
                ax_t.annotate("clue", (task.clue_time, y), xytext=(0, 7), textcoords="offset points",
                              ha="center", fontsize=7)
        windows = [] if task is None else [(e.start - task.effective_tolerance, e.end + task.effective_tolerance)
                                           for e in task.events]
        for a in bag_result.alerts:
            if a.task_id != tid:
                continue
            if task is not None and task.metric == "narration":
                inside = any(s <= a.time_s < e for s, e in windows)
            else:
                inside = any(s <= a.time_s <= e for s, e in windows)
            if task is not None and task.metric == "crr":
                inside = a.time_s >= (task.clue_time or 0.0)
            if task is not None and a.time_s <= task.ask_time:  # before the task was given: ignored
                ax_t.plot([a.time_s], [y], marker="|", color="0.6", ms=12, mew=1.5)
            elif inside:
                ax_t.plot([a.time_s], [y], marker="|", color="black", ms=16, mew=2)
            else:
                ax_t.plot([a.time_s], [y], marker="x", color="red", ms=8, mew=2)
        yticks.append(y)
        ylabels.append(label)
    ax_t.set_yticks(yticks)
    ax_t.set_yticklabels(ylabels, fontsize=8)
    ax_t.set_ylim(-0.7, n_lanes - 0.3)
    ax_t.grid(True, axis="x", alpha=0.3)
    ax_t.legend(handles=[
        Line2D([], [], marker="|", ls="", color="black", ms=10, mew=2, label="trigger in GT"),
        Line2D([], [], marker="x", ls="", color="red", ms=7, mew=2, label="false alarm / early"),
        Line2D([], [], marker="s", ls="", color="0.6", alpha=0.5, ms=9, label="GT window"),
    ], loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    if not task_ids:
        ax_t.text(0.5, 0.5, "no tasks", transform=ax_t.transAxes, ha="center", va="center", color="0.5")

    # -- queries
    if queries:
        ax_q = axes[2]
        qmetrics = metrics.get("queries", {})
        levels = 3
        for i, q in enumerate(sorted(queries, key=lambda q: q.time)):
            y = levels - 1 - (i % levels)
            qm = qmetrics.get(q.id, {})
            ax_q.plot([q.time], [y], marker="o", color="tab:blue", ms=6)
            ax_q.annotate(f"Q {_short(q.text, 34)}", (q.time, y), xytext=(3, 5), textcoords="offset points",
                          fontsize=7, color="tab:blue")
            t_ans = qm.get("first_reply_s")
            if t_ans is None:
                chunks = bag_result.replies_for(q.id)
                t_ans = chunks[0].time_s if chunks else None
            if t_ans is not None:
                correct = qm.get("correct")
                c = "0.45" if correct is None else ("tab:green" if correct else "tab:red")
                mark = "" if correct is None else (" [ok]" if correct else " [wrong]")
                answer = qm.get("answer") or bag_result.answer(q.id) or ""
                ax_q.plot([q.time, t_ans], [y, y], color=c, lw=1, alpha=0.6)
                ax_q.plot([t_ans], [y], marker="s", color=c, ms=6)
                ax_q.annotate(f"A {_short(answer, 34)}{mark}", (t_ans, y), xytext=(3, -10),
                              textcoords="offset points", fontsize=7, color=c)
            if q.clue_time is not None:
                ax_q.plot([q.clue_time], [y], marker="*", color="goldenrod", ms=9)
        ax_q.set_ylim(-0.8, levels - 0.2)
        ax_q.set_yticks([])
        ax_q.set_ylabel("queries")
        ax_q.grid(True, axis="x", alpha=0.3)

    axes[-1].set_xlabel("stream time (s since origin)")
    axes[-1].set_xlim(0, x_max * 1.01)
    title = f"{bag_result.name}  ({duration:.0f} s, {len(bag_result.units)} units, {len(bag_result.alerts)} alerts)"
    o = metrics.get("overall", {})
    parts = []
    for m in ("pa", "po", "rec", "crr"):
        if o.get(m, {}).get("n"):
            parts.append(f"{m.upper()} {o[m]['hits']}/{o[m]['n']}")
    if o.get("narration", {}).get("f1") is not None:
        parts.append(f"narr F1 {o['narration']['f1']:.2f}")
    if o.get("qa", {}).get("n"):
        parts.append(f"QA {o['qa']['correct']}/{o['qa']['n']}")
    if o.get("false_alarms", {}).get("per_hour") is not None:
        parts.append(f"FA {o['false_alarms']['count']} ({o['false_alarms']['per_hour']:.1f}/h)")
    if parts:
        title += "\n" + "   ".join(parts)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- summary tables ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}"


def _count_cell(d: Mapping[str, Any] | None, hits: str = "hits") -> str:
    if not d or not d.get("n"):
        return "-"
    return f"{_pct(d.get('rate', d.get('accuracy')))} ({d[hits]}/{d['n']})"


def number_cell(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    keep = [i for i, h in enumerate(headers) if i < 2 or any(r[i] != "-" for r in rows)]
    headers = [headers[i] for i in keep]
    rows = [[r[i] for i in keep] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


SPEED_NOTE = ("speed: stream time / processing time (x real time; the real-time factor in the JSON files is "
              "its inverse, processing time / stream time)")
SWEEP_NOTE = ("best operating point: the rule's threshold x window (same cooldown) that, replayed on this bag's "
              "recorded probabilities, gives the highest F1 of triggers against the annotated events (ties: higher "
              "precision, then recall, then the smaller window, then the higher threshold). It is fitted to the "
              "bag it scores: check it on other bags before using it as a task's threshold and window.")
_BAG_HEADERS = ["bag", "dur s", "units", "alerts", "PA %", "PO %", "REC %", "CRR %", "narr F1", "QA %",
                "FA/h", "delay p50", "delay p90", "speed"]


def _bag_row(name: str, r: Mapping[str, Any]) -> list[str]:
    o = r["overall"]
    nar = o.get("narration", {})
    fa = o.get("false_alarms", {})
    dd = o.get("detection_delay", {})
    return [
        name, f"{r['duration_s']:.0f}", str(r.get("n_units", "-")), str(r.get("n_alerts", "-")),
        _count_cell(o.get("pa")), _count_cell(o.get("po")), _count_cell(o.get("rec")), _count_cell(o.get("crr")),
        number_cell(nar.get("f1"), "{:.3f}"), _count_cell(o.get("qa"), "correct"),
        number_cell(fa.get("per_hour")) if fa.get("hours") else "-",
        number_cell(dd.get("median"), "{:.1f}s"), number_cell(dd.get("p90"), "{:.1f}s"),
        number_cell(r.get("speed_x_real_time"), "{:.1f}x"),  # x real time
    ]


def format_summary(results: Sequence[Mapping[str, Any]], combined: Mapping[str, Any] | None = None) -> str:
    """Plain-text tables: one row per bag (+ ALL, micro-aggregated, when several), then one row
    per task with its rule, score, false alarms, median delay and the sweep's best operating point.
    Columns that are empty for every row are left out. Rates are percent with (hits/n)."""
    rows = [_bag_row(r["bag"], r) for r in results]
    if len(results) > 1:
        combined = combined or combine(results)
        rows.append(_bag_row("ALL", {**combined, "bag": "ALL"}))
    text = [_table(_BAG_HEADERS, rows) + "\n" + SPEED_NOTE]
    trows = []
    for r in results:
        for tid, t in r.get("tasks", {}).items():
            rule = t.get("rule", {})
            if "success" in t:
                score = f"{t['metric'].upper()} {_count_cell(t['success'])}"
            elif "narration" in t:
                score = f"F1 {t['narration']['f1']:.3f}"
            else:
                score = "-"
            best = (t.get("sweep") or {}).get("best")
            best_s = "-" if not best else (f"thr {best['threshold']:g} w {best['window']}: "
                                           f"P {best['precision']:.2f} R {best['recall']:.2f} F1 {best['f1']:.2f}")
            fa = t.get("false_alarms")
            dd = t.get("detection_delay") or {}
            trows.append([
                f"{r['bag']}/{tid}" if len(results) > 1 else tid,
                f"thr {rule.get('threshold', 0):g} w {rule.get('window', 1)} cd {rule.get('cooldown_s', 0):g}",
                f"{t.get('n_events', 0)}/{t.get('n_triggers', 0)}", score,
                "-" if not fa else f"{fa['count']} ({number_cell(fa['per_hour'])}/h)",
                number_cell(dd.get("median"), "{:.1f}s"), best_s,
            ])
    if trows:
        table = _table(["task", "rule", "events/trig", "score", "false alarms", "delay p50",
                        "best operating point (sweep)"], trows)
        if any(row[-1] != "-" for row in trows):
            table += "\n" + SWEEP_NOTE
        text.append(table)
    crows = []
    for r in results:
        compare = r.get("compare")
        if not compare:
            continue
        for tid, t in r.get("tasks", {}).items():
            c = compare["tasks"].get(tid, {})
            own = t["success"]["rate"] if "success" in t else (t.get("narration") or {}).get("f1")
            fa = (t.get("false_alarms") or {}).get("per_hour")
            crows.append([f"{r['bag']}/{tid}" if len(results) > 1 else tid, number_cell(own, "{:.2f}"),
                          number_cell(c.get("success"), "{:.2f}"), number_cell(fa), number_cell(c.get("false_alarms_per_hour"))])
    if crows:
        head = results[0].get("speak_head", "checkpoint")
        other = next(r["compare"]["head"] for r in results if r.get("compare"))
        text.append(_table(["task", "score (this run's head)", "score (compared head)", "false alarms/h",
                            "false alarms/h (compared)"], crows)
                    + f"\nthis run's head: {head}; compared head: {other} (same replay, same layer states)")
    return "\n\n".join(text)


def print_summary(results: Sequence[Mapping[str, Any]] | Mapping[str, Any], file: TextIO | None = None,
                  combined: Mapping[str, Any] | None = None) -> str:
    """Print `format_summary` (one result or a list) to `file` (stdout); returns the text."""
    if isinstance(results, Mapping):
        results = [results]
    text = format_summary(list(results), combined)
    print(text, file=file or sys.stdout)
    return text


def write_summary(out_dir: str | Path, results: Sequence[Mapping[str, Any]], *, print_table: bool = True,
                  file: TextIO | None = None) -> Path:
    """summary.json in out_dir: {"bags": {name: per-bag summary}, "combined": metrics.combine(results)};
    prints the summary tables unless print_table is False. Returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    combined = combine(results)
    bags = {}
    for r in results:
        bags[r["bag"]] = {
            "duration_s": r["duration_s"], "wall_s": r["wall_s"], "real_time_factor": r.get("real_time_factor"),
            "speed_x_real_time": r.get("speed_x_real_time"),
            "n_units": r["n_units"], "n_alerts": r["n_alerts"], "overall": r["overall"],
            "speak_head": r.get("speak_head"),
            **({"compare": {k: r["compare"][k] for k in ("head", "tasks")}} if r.get("compare") else {}),
            "tasks": {tid: {k: t.get(k) for k in ("metric", "rule", "success", "narration", "false_alarms")
                            if k in t} | {"best_operating_point": (t.get("sweep") or {}).get("best")}
                      for tid, t in r.get("tasks", {}).items()},
        }
    path = out / SUMMARY_JSON
    _dump_json(path, {"bags": bags, "combined": combined})
    if print_table:
        print_summary(results, file=file, combined=combined)
    return path
