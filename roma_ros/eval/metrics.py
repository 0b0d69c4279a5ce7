"""ROMA's evaluation metrics (docs/model.md section 8) plus robot metrics, as pure functions.

All times are seconds since the stream origin. A "trigger" is the time of one response of a task
(an alert or a narration: the END of the decision window, see `roma_ros.core.triggers`).
Conventions shared by every function below:

- Triggers at or before a task's `ask_time` are ignored (t > ask_time counts; ask_time defaults
  to 0, and unit ends are > 0, so by default every trigger counts).
- Interval events are closed, [start, end], except narration windows, which are [start, end).
- Results do not depend on the order in which events or triggers are given (both are sorted).
- precision = TP / (TP + FP), or 1.0 when nothing was predicted (vacuous);
  recall = TP / (TP + FN), or 1.0 when there was nothing to find (vacuous);
  F1 = 2PR / (P + R), or 0.0 when P + R = 0. So: no predictions and no events -> 1/1/1;
  no predictions but events -> P 1, R 0, F1 0; predictions but no events -> P 0, R 1, F1 0.

The decision rule itself is `roma_ros.core.triggers` (this module only replays it, for the sweep).
"""
from __future__ import annotations

import math
import re
import statistics
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from roma_ros.core.triggers import NS, TriggerRule, TriggerState

Interval = tuple[float, float]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.97, 0.975, 0.99)
DEFAULT_WINDOWS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)


# --- small helpers --------------------------------------------------------------------------------


def _sorted_triggers(triggers: Iterable[float], ask_time: float = 0.0) -> list[float]:
    return sorted(float(t) for t in triggers if float(t) > ask_time)


def _intervals(events: Iterable[Any]) -> list[Interval]:
    """Accept (start, end) pairs, bare times (points) or objects with .start/.end; sort by start."""
    out: list[Interval] = []
    for e in events:
        if hasattr(e, "start") and hasattr(e, "end"):
            out.append((float(e.start), float(e.end)))
        elif isinstance(e, (int, float)):
            out.append((float(e), float(e)))
        else:
            s, t = e
            out.append((float(s), float(t)))
    return sorted(out)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1) with the vacuous conventions of this module's docstring."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def rate(hits: int, n: int) -> float | None:
    """hits / n, or None when n == 0 (undefined, shown as "-")."""
    return hits / n if n else None


@dataclass(frozen=True)
class EventOutcome:
    """The verdict on one ground-truth event: `response_s` is the trigger that decided it (None: none)."""

    start: float
    end: float
    success: bool
    response_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- ROMA's proactive metrics ---------------------------------------------------------------------


def _episode_first(triggers: Sequence[float], intervals: Sequence[Interval], ask_time: float) -> list[EventOutcome]:
    """For each interval i (sorted by start) its episode begins after the previous interval's end
    (the first episode after ask_time); success iff the first trigger of the episode lies in
    [start_i, end_i]. A first trigger before start_i (early) or none until end_i (miss) fails."""
    out = []
    episode_start = ask_time
    for start, end in intervals:
        first = next((t for t in triggers if t > episode_start), None)
        ok = first is not None and start <= first <= end
        out.append(EventOutcome(start, end, ok, first if first is not None and first <= end else None))
        episode_start = max(episode_start, end)
    return out


def pa_success(triggers: Iterable[float], events: Iterable[Any], ask_time: float = 0.0) -> list[EventOutcome]:
    """Proactive alert (OmniMMI-PA): success if the FIRST trigger lies inside the GT interval.

    Several events of one task in one stream are scored as episodes: event i's episode starts
    right after the end of event i-1 (event 0's at ask_time). Event i succeeds iff the first
    trigger t of its episode (t > previous end) satisfies start_i <= t <= end_i. An earlier
    trigger in the gap before start_i fails the event (too early); no trigger until end_i fails it
    (missed). Triggers after a success and inside the same event are ignored here (see
    `false_alarms`). Returns one outcome per event, sorted by start; response_s is the deciding
    trigger when it falls at or before end_i.
    """
    return _episode_first(_sorted_triggers(triggers, ask_time), _intervals(events), ask_time)


def po_success(triggers: Iterable[float], times: Iterable[Any], tolerance: float = 2.0,
               ask_time: float = 0.0) -> list[EventOutcome]:
    """Proactive output (StreamingBench-PO): success if the FIRST response is within +-tolerance
    (2 s) of the GT time: |t - gt| <= tolerance.

    Several GT times in one stream are episodes, exactly as in `pa_success` with each time
    widened to [gt - tolerance, gt + tolerance]: time i's episode starts after gt_{i-1} + tolerance.
    Outcomes report start = end = gt.
    """
    points = _intervals(times)
    widened = [(s - tolerance, e + tolerance) for s, e in points]
    raw = _episode_first(_sorted_triggers(triggers, ask_time), widened, ask_time)
    return [EventOutcome(p[0], p[1], o.success, o.response_s) for p, o in zip(points, raw)]


def rec_success(triggers: Iterable[float], events: Iterable[Any], ask_time: float = 0.0) -> list[EventOutcome]:
    """Repetition event count (OVO-REC): an event succeeds iff at least one trigger t lies inside
    it, start <= t <= end. The micro success rate is (successful events) / (events), summed over
    all REC tasks and bags (`evaluate` and `combine` keep the counts). Extra triggers are not
    penalized here (see `false_alarms`). response_s is the first trigger inside the event.
    """
    trig = _sorted_triggers(triggers, ask_time)
    out = []
    for start, end in _intervals(events):
        first = next((t for t in trig if start <= t <= end), None)
        out.append(EventOutcome(start, end, first is not None, first))
    return out


def crr_success(triggers: Iterable[float], ask_time: float, clue_time: float) -> EventOutcome:
    """Clues reveal responding (OVO-CRR): the FIRST response after the ask time (t > ask_time)
    must come at or after the clue time (t >= clue_time). Responding before the clue (guessing)
    or never responding fails. The outcome has start = ask_time, end = clue_time.
    """
    trig = _sorted_triggers(triggers, ask_time)
    first = trig[0] if trig else None
    return EventOutcome(ask_time, clue_time, first is not None and first >= clue_time, first)


def success_counts(outcomes: Iterable[EventOutcome]) -> dict[str, Any]:
    """{"hits", "n", "rate"} for a list of outcomes (rate None when n == 0)."""
    outcomes = list(outcomes)
    hits = sum(o.success for o in outcomes)
    return {"hits": hits, "n": len(outcomes), "rate": rate(hits, len(outcomes))}


# --- narration -------------------------------------------------------------------------------------


def narration_f1(predictions: Iterable[float], windows: Iterable[Any]) -> dict[str, Any]:
    """Narration timing F1 (YouCook2 / OVO-SSR style).

    Windows are half-open [start, end). Predictions are taken in time order: the first prediction
    inside a window is a true positive, further predictions inside the same window are false
    positives, predictions outside every window are false positives, and windows without any
    prediction are false negatives. (If windows overlap, a prediction belongs to the
    earliest-starting window containing it.) Returns tp, fp, fn, precision, recall, f1 (module
    conventions for empty cases) and `matches`: [(window index in start order, prediction time)].
    """
    wins = _intervals(windows)
    preds = sorted(float(p) for p in predictions)
    matched: set[int] = set()
    matches: list[tuple[int, float]] = []
    tp = fp = 0
    for p in preds:
        idx = next((i for i, (s, e) in enumerate(wins) if s <= p < e), None)
        if idx is None or idx in matched:
            fp += 1
        else:
            matched.add(idx)
            matches.append((idx, p))
            tp += 1
    fn = len(wins) - len(matched)
    precision, recall, f1 = prf(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1, "matches": matches}


def token_f1(prediction: str, reference: str) -> float:
    """Text similarity for narration: F1 of the bags of normalized tokens (SQuAD-style).
    1.0 when both normalize to nothing, 0.0 when only one does."""
    p = normalize_answer(prediction).split()
    r = normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum(min(p.count(w), r.count(w)) for w in set(p))
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


# --- QA ----------------------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_APOSTROPHES = re.compile(r"['\u2019\u2018`]")


def normalize_answer(text: str) -> str:
    """Normalization for QA matching: Unicode NFKC, lowercase, apostrophes removed ("don't" ->
    "dont"), every other punctuation or symbol character -> space, tokens split on whitespace,
    articles (a, an, the) dropped, number words zero..twenty -> digits, tokens joined by one space.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    tokens = [_NUMBER_WORDS.get(t, t) for t in text.split() if t not in _ARTICLES]
    return " ".join(tokens)


def qa_correct(answer: str | None, accepted: Iterable[str]) -> bool:
    """An answer is correct iff, for some accepted answer A, normalize(A) is non-empty and either
    equals normalize(answer) or occurs in it as a whole-token sequence (" " + A + " " is a substring
    of " " + answer + " "): "It is red." matches "red" but "bored" does not. No answer -> wrong.
    """
    if answer is None:
        return False
    got = f" {normalize_answer(answer)} "
    for a in accepted:
        norm = normalize_answer(a)
        if norm and f" {norm} " in got:
            return True
    return False


def qa_accuracy(items: Iterable[tuple[str | None, Sequence[str]]]) -> dict[str, Any]:
    """Accuracy over (answer, accepted answers) pairs by `qa_correct`: {"correct", "n", "accuracy"}
    (accuracy None when n == 0). Pairs with no accepted answers are skipped (not scorable)."""
    correct = n = 0
    for answer, accepted in items:
        if not accepted:
            continue
        n += 1
        correct += qa_correct(answer, accepted)
    return {"correct": correct, "n": n, "accuracy": rate(correct, n)}


# --- robot metrics ----------------------------------------------------------------------------------


def _inside_any(t: float, intervals: Sequence[Interval], tolerance: float, half_open: bool = False) -> bool:
    if half_open:
        return any(s - tolerance <= t < e + tolerance for s, e in intervals)
    return any(s - tolerance <= t <= e + tolerance for s, e in intervals)


def false_alarms(triggers: Iterable[float], events: Iterable[Any], tolerance: float = 0.0,
                 half_open: bool = False) -> int:
    """Number of triggers not inside any GT window widened by `tolerance` on both sides:
    a trigger t is a false alarm iff no event has start - tol <= t <= end + tol (with
    half_open, t < end + tol: narration windows). Repeated triggers inside one window are NOT
    false alarms."""
    wins = _intervals(events)
    return sum(not _inside_any(float(t), wins, tolerance, half_open) for t in triggers)


def false_alarms_per_hour(triggers: Iterable[float], events: Iterable[Any], duration_s: float,
                          tolerance: float = 0.0, half_open: bool = False) -> float | None:
    """`false_alarms(...)` divided by the stream duration in hours (None when duration_s <= 0)."""
    if duration_s <= 0:
        return None
    return false_alarms(triggers, events, tolerance, half_open) / (duration_s / 3600.0)


def delay_stats(delays: Sequence[float]) -> dict[str, Any]:
    """{"n", "median", "p90", "max", "mean", "delays_s"}; statistics None when empty.
    p90 uses linear interpolation between order statistics (numpy's default)."""
    d = [float(x) for x in delays]
    if not d:
        return {"n": 0, "median": None, "p90": None, "max": None, "mean": None, "delays_s": []}
    return {"n": len(d), "median": float(statistics.median(d)), "p90": float(np.percentile(d, 90)),
            "max": max(d), "mean": float(statistics.fmean(d)), "delays_s": d}


def detection_delays(triggers: Iterable[float], events: Iterable[Any], tolerance: float = 0.0) -> dict[str, Any]:
    """Detection delay of every detected event: an event [s, e] is detected iff some trigger lies in
    [s - tol, e + tol]; its delay is (first such trigger) - s (negative only with a tolerance).
    Returns `delay_stats` of the delays (in event start order) plus n_events and n_detected.
    For a point event (po) s = e = the GT time."""
    trig = sorted(float(t) for t in triggers)
    delays = []
    wins = _intervals(events)
    for s, e in wins:
        first = next((t for t in trig if s - tolerance <= t <= e + tolerance), None)
        if first is not None:
            delays.append(first - s)
    out = delay_stats(delays)
    out.update(n_events=len(wins), n_detected=len(delays))
    return out


# --- replaying the decision rule, and the threshold x window sweep --------------------------------


@dataclass(frozen=True)
class TriggerTime:
    """A trigger in seconds: time_s = end of the window, window_start_s its first unit's start."""

    time_s: float
    unit_index: int
    window_start_s: float
    prob: float


def replay_triggers(probs: Sequence[float], starts: Sequence[float], ends: Sequence[float],
                    threshold: float, window: int, cooldown_s: float = 0.0, *,
                    indices: Sequence[int] | None = None, restarts: Sequence[bool] | None = None,
                    ask_time: float = 0.0) -> list[TriggerTime]:
    """Apply `roma_ros.core.triggers` (w consecutive units with p >= thr, trigger at the window's
    end, per-task cooldown, run restarts after a trigger, index gaps and stream restarts reset the
    run) to recorded per-unit probabilities. Units ending at or before ask_time are skipped (the
    task did not exist yet). NaN probabilities never reach the threshold."""
    state = TriggerState(TriggerRule(threshold=threshold, window=window, cooldown_s=cooldown_s))
    out = []
    idx = range(len(probs)) if indices is None else indices
    for i, (k, p, s, e) in enumerate(zip(idx, probs, starts, ends)):
        if e <= ask_time:
            continue
        restart = bool(restarts[i]) if restarts is not None else False
        trig = state.update(int(k), int(round(s * NS)), int(round(e * NS)), float(p), restart=restart)
        if trig is not None:
            out.append(TriggerTime(trig.time_ns / NS, trig.unit_index, trig.window_start_ns / NS, trig.prob))
    return out


def score_triggers(triggers: Sequence[float], events: Iterable[Any], *, scoring: str = "alert",
                   tolerance: float = 0.0) -> dict[str, Any]:
    """Precision/recall/F1 of a set of trigger times against GT events, as used by `sweep`.

    scoring "alert" (robot view): a trigger is correct iff it lies in some [s - tol, e + tol]
    (so precision = 1 - false alarms / triggers); recall = events with at least one such trigger /
    events. scoring "narration": `narration_f1` ([s, e) windows, one TP per window, tolerance unused).
    Returns n_triggers, tp, fp, fn, precision, recall, f1 (module conventions for empty cases).
    """
    wins = _intervals(events)
    if scoring == "narration":
        r = narration_f1(triggers, wins)
        return {"n_triggers": len(triggers), "tp": r["tp"], "fp": r["fp"], "fn": r["fn"],
                "precision": r["precision"], "recall": r["recall"], "f1": r["f1"]}
    if scoring != "alert":
        raise ValueError(f"scoring must be 'alert' or 'narration', got {scoring!r}")
    fp = false_alarms(triggers, wins, tolerance)
    good = len(triggers) - fp
    detected = sum(any(s - tolerance <= t <= e + tolerance for t in triggers) for s, e in wins)
    precision = good / len(triggers) if triggers else 1.0
    recall = detected / len(wins) if wins else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n_triggers": len(triggers), "tp": good, "fp": fp, "fn": len(wins) - detected,
            "precision": precision, "recall": recall, "f1": f1}


def best_key(row: Mapping[str, Any]) -> tuple:
    return (row["f1"], row["precision"], row["recall"], -row["window"], row["threshold"])


def sweep(probs: Sequence[float], starts: Sequence[float], ends: Sequence[float], events: Iterable[Any],
          thresholds: Iterable[float] = DEFAULT_THRESHOLDS, windows: Iterable[int] = DEFAULT_WINDOWS,
          cooldown_s: float = 0.0, *, tolerance: float = 0.0, scoring: str = "alert",
          indices: Sequence[int] | None = None, restarts: Sequence[bool] | None = None,
          ask_time: float = 0.0) -> dict[str, Any]:
    """Threshold x window sweep of the decision rule over recorded probabilities.

    For every (threshold, window) the rule is replayed (`replay_triggers`, same cooldown for all)
    and scored with `score_triggers` (scoring "alert" or "narration"). Returns
    {"table": [rows sorted by window, then threshold], "best": row}; a row has threshold, window,
    n_triggers, tp, fp, fn, precision, recall, f1. The best operating point maximizes F1; ties go to
    higher precision, then higher recall, then the smaller window (less delay), then the higher
    threshold.
    """
    wins = _intervals(events)
    table = []
    for w in sorted(set(int(w) for w in windows)):
        for thr in sorted(set(float(t) for t in thresholds)):
            trig = [t.time_s for t in replay_triggers(probs, starts, ends, thr, w, cooldown_s, indices=indices,
                                                      restarts=restarts, ask_time=ask_time)]
            row = {"threshold": thr, "window": w}
            row.update(score_triggers(trig, wins, scoring=scoring, tolerance=tolerance))
            table.append(row)
    best = max(table, key=best_key) if table else None
    return {"table": table, "best": best}


# --- evaluating one bag ----------------------------------------------------------------------------


def effective_rule(task: Any, default: TriggerRule | None = None) -> TriggerRule:
    """The decision rule of an annotated task: its threshold/window/cooldown overrides on top of
    `default` (TriggerRule() when None), with the task's mode."""
    d = default or TriggerRule()
    return TriggerRule(
        threshold=d.threshold if task.threshold is None else task.threshold,
        window=d.window if task.window is None else task.window,
        cooldown_s=d.cooldown_s if task.cooldown is None else task.cooldown,
        mode=task.mode,
    )


def _json_float(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x)


def evaluate(bag_result: Any, annotations: Any, *, rules: Mapping[str, TriggerRule] | None = None,
             default_rule: TriggerRule | None = None, thresholds: Iterable[float] | None = DEFAULT_THRESHOLDS,
             windows: Iterable[int] = DEFAULT_WINDOWS) -> dict[str, Any]:
    """Every metric for one bag (a `records.BagResult`) against its `annotations.Annotations`.

    Triggers of a task are the times of the bag's alerts with that task id (what the system did).
    `rules` (task id -> TriggerRule actually used) defaults to `effective_rule(task, default_rule)`;
    it gives the sweep its cooldown and the report its thresholds. thresholds=None skips the sweep.

    Per task: the metric's success outcomes (pa/po/rec/crr) or narration F1 (+ mean token F1 of
    matched predictions against event texts), false alarms (count, per hour; tolerance = the task's
    effective tolerance: 2 s for po, else 0, or the annotated one), detection delays and the sweep.
    Per query: the answer, correctness (`qa_correct`), first/final reply times, latency (first
    reply chunk - query time) and, with a clue_time, CRR success of the first reply chunk.
    Overall: micro-aggregated counts (so `combine` can merge bags): pa/po/rec/crr hits and n,
    narration tp/fp/fn, qa correct/n, false alarms count/hours, pooled delays and reply latencies.
    Tasks without events (negative streams) still contribute false alarms.
    """
    rules = dict(rules or {})
    duration = float(bag_result.stream_duration_s)
    hours = duration / 3600.0
    units = sorted(bag_result.units, key=lambda u: u.start_s)
    probs = [u.prob for u in units]
    starts = [u.start_s for u in units]
    ends = [u.end_s for u in units]
    indices = [u.index for u in units]
    restarts = [u.restart for u in units]

    overall: dict[str, Any] = {m: {"hits": 0, "n": 0} for m in ("pa", "po", "rec", "crr")}
    overall["narration"] = {"tp": 0, "fp": 0, "fn": 0}
    fa_total = 0
    all_delays: list[float] = []
    tasks_out: dict[str, Any] = {}
    known_tasks = {t.id for t in annotations.tasks}

    for task in annotations.tasks:
        rule = rules.get(task.id) or effective_rule(task, default_rule)
        trig = _sorted_triggers((a.time_s for a in bag_result.alerts if a.task_id == task.id), task.ask_time)
        tol = task.effective_tolerance
        entry: dict[str, Any] = {
            "metric": task.metric, "mode": task.mode, "instruction": task.instruction,
            "rule": {"threshold": rule.threshold, "window": rule.window, "cooldown_s": rule.cooldown_s},
            "ask_time": task.ask_time, "tolerance_s": tol,
            "n_events": len(task.events), "n_triggers": len(trig), "triggers_s": trig,
        }
        outcomes: list[EventOutcome] | None = None
        if task.metric == "pa":
            outcomes = pa_success(trig, task.events, task.ask_time)
        elif task.metric == "po":
            outcomes = po_success(trig, task.events, tol, task.ask_time)
        elif task.metric == "rec":
            outcomes = rec_success(trig, task.events, task.ask_time)
        elif task.metric == "crr":
            outcomes = [crr_success(trig, task.ask_time, task.clue_time)]
        if outcomes is not None:
            counts = success_counts(outcomes)
            entry["success"] = counts
            entry["events"] = [o.to_dict() for o in outcomes]
            overall[task.metric]["hits"] += counts["hits"]
            overall[task.metric]["n"] += counts["n"]
        if task.metric == "narration":
            nar = narration_f1(trig, task.events)
            events_sorted = sorted(task.events, key=lambda e: (e.start, e.end))
            texts = {a.time_s: a.text for a in bag_result.alerts if a.task_id == task.id}
            sims = [token_f1(texts.get(p, ""), events_sorted[i].text) for i, p in nar["matches"]
                    if events_sorted[i].text is not None]
            nar["text_similarity"] = float(statistics.fmean(sims)) if sims else None
            nar["matches"] = [[i, p] for i, p in nar["matches"]]
            entry["narration"] = nar
            for k in ("tp", "fp", "fn"):
                overall["narration"][k] += nar[k]
        if task.metric != "crr":
            fa = false_alarms(trig, task.events, tol, half_open=task.metric == "narration")
            fa_total += fa
            entry["false_alarms"] = {"count": fa, "per_hour": fa / hours if hours > 0 else None}
            delays = detection_delays(trig, task.events, tol)
            all_delays.extend(delays["delays_s"])
            entry["detection_delay"] = delays
            if thresholds is not None and units:
                own = [u.prob_for(task.id) for u in units] if any(u.task_probs for u in units) else probs
                entry["sweep"] = sweep(own, starts, ends, task.events, thresholds, windows, rule.cooldown_s,
                                       tolerance=tol, scoring="narration" if task.metric == "narration" else "alert",
                                       indices=indices, restarts=restarts, ask_time=task.ask_time)
        tasks_out[task.id] = entry

    queries_out: dict[str, Any] = {}
    qa_items = []
    latencies: list[float] = []
    for q in annotations.queries:
        chunks = [r for r in bag_result.replies_for(q.id)]
        answer = bag_result.answer(q.id)
        first = chunks[0].time_s if chunks else None
        finals = [r.time_s for r in chunks if r.final]
        entry = {"time": q.time, "text": q.text, "answer": answer, "accepted": list(q.answers),
                 "correct": qa_correct(answer, q.answers) if q.answers else None,
                 "first_reply_s": first, "final_reply_s": finals[0] if finals else None,
                 "latency_s": None if first is None else first - q.time}
        if entry["latency_s"] is not None:
            latencies.append(entry["latency_s"])
        if q.clue_time is not None:
            o = crr_success([r.time_s for r in chunks], q.time, q.clue_time)
            entry["crr"] = o.success
            overall["crr"]["hits"] += o.success
            overall["crr"]["n"] += 1
        qa_items.append((answer, q.answers))
        queries_out[q.id] = entry

    for m in ("pa", "po", "rec", "crr"):
        overall[m]["rate"] = rate(overall[m]["hits"], overall[m]["n"])
    n = overall["narration"]
    n["precision"], n["recall"], n["f1"] = prf(n["tp"], n["fp"], n["fn"])
    if not any(t.metric == "narration" for t in annotations.tasks):
        n["f1"] = n["precision"] = n["recall"] = None
    overall["qa"] = qa_accuracy(qa_items)
    overall["false_alarms"] = {"count": fa_total, "hours": hours, "per_hour": fa_total / hours if hours > 0 else None}
    overall["detection_delay"] = delay_stats(all_delays)
    overall["reply_latency"] = delay_stats(latencies)

    unknown = sorted({a.task_id for a in bag_result.alerts} - known_tasks)
    wall = float(bag_result.wall_s)
    return {
        "bag": bag_result.name,
        "duration_s": duration,
        "wall_s": wall,
        # real-time factor: processing time / stream time (below 1: faster than real time)
        "real_time_factor": _json_float(wall / duration) if duration > 0 else None,
        "speed_x_real_time": _json_float(duration / wall) if wall > 0 else None,
        "n_units": len(units),
        "n_alerts": len(bag_result.alerts),
        "n_replies": len(bag_result.replies),
        "unannotated_task_ids": unknown,
        "tasks": tasks_out,
        "queries": queries_out,
        "overall": overall,
    }


def combine(per_bag: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Micro-aggregate several `evaluate` results: summed hits/n, tp/fp/fn, qa counts, false alarm
    counts over summed hours, pooled delays and latencies. Returns the same shape as an
    `evaluate(...)["overall"]` plus bags, duration_s, wall_s, real_time_factor (wall / stream time), speed_x_real_time, n_units, n_alerts."""
    overall: dict[str, Any] = {m: {"hits": 0, "n": 0} for m in ("pa", "po", "rec", "crr")}
    nar = {"tp": 0, "fp": 0, "fn": 0}
    qa = {"correct": 0, "n": 0}
    fa_count, hours = 0, 0.0
    delays: list[float] = []
    lat: list[float] = []
    any_narration = False
    for r in per_bag:
        o = r["overall"]
        for m in ("pa", "po", "rec", "crr"):
            overall[m]["hits"] += o[m]["hits"]
            overall[m]["n"] += o[m]["n"]
        for k in nar:
            nar[k] += o["narration"][k]
        any_narration |= o["narration"]["f1"] is not None
        qa["correct"] += o["qa"]["correct"]
        qa["n"] += o["qa"]["n"]
        fa_count += o["false_alarms"]["count"]
        hours += o["false_alarms"]["hours"]
        delays.extend(o["detection_delay"]["delays_s"])
        lat.extend(o["reply_latency"]["delays_s"])
    for m in ("pa", "po", "rec", "crr"):
        overall[m]["rate"] = rate(overall[m]["hits"], overall[m]["n"])
    p, rc, f = prf(nar["tp"], nar["fp"], nar["fn"]) if any_narration else (None, None, None)
    overall["narration"] = {**nar, "precision": p, "recall": rc, "f1": f}
    overall["qa"] = {**qa, "accuracy": rate(qa["correct"], qa["n"])}
    overall["false_alarms"] = {"count": fa_count, "hours": hours, "per_hour": fa_count / hours if hours > 0 else None}
    overall["detection_delay"] = delay_stats(delays)
    overall["reply_latency"] = delay_stats(lat)
    duration = sum(r["duration_s"] for r in per_bag)
    wall = sum(r["wall_s"] for r in per_bag)
    return {
        "bags": [r["bag"] for r in per_bag],
        "duration_s": duration,
        "wall_s": wall,
        "real_time_factor": wall / duration if duration > 0 else None,
        "speed_x_real_time": duration / wall if wall > 0 else None,
        "n_units": sum(r["n_units"] for r in per_bag),
        "n_alerts": sum(r["n_alerts"] for r in per_bag),
        "overall": overall,
    }


def rescored(bag_result: Any, probs: Sequence[float], annotations: Any,
             rules: Mapping[str, TriggerRule] | None = None, default_rule: TriggerRule | None = None,
             task_probs: Mapping[str, Sequence[float]] | None = None) -> Any:
    """`bag_result` as it would have been with per-unit probabilities `probs` (in its unit order;
    `task_probs`: task id -> a task's own probabilities): each annotated task's alerts replayed
    with its rule (`replay_triggers`); replies kept. For comparing speak heads on one replay: the
    head changes only the probabilities."""
    from roma_ros.eval.records import AlertRecord, BagResult, UnitRecord

    rules = dict(rules or {})
    own = dict(task_probs or {})
    units = list(bag_result.units)
    starts, ends = [u.start_s for u in units], [u.end_s for u in units]
    indices, restarts = [u.index for u in units], [u.restart for u in units]
    alerts, fired = [], {}
    for task in annotations.tasks:
        rule = rules.get(task.id) or effective_rule(task, default_rule)
        for t in replay_triggers(list(own.get(task.id, probs)), starts, ends, rule.threshold, rule.window,
                                 rule.cooldown_s, indices=indices, restarts=restarts, ask_time=task.ask_time):
            alerts.append(AlertRecord(task.id, t.time_s, t.unit_index, t.prob, t.window_start_s,
                                      task.instruction, task.mode))
            fired.setdefault(t.unit_index, []).append(task.id)
    new_units = [UnitRecord(u.index, u.start_s, u.end_s, float(p), fired.get(u.index, []), u.restart,
                            {tid: float(v[i]) for tid, v in own.items()})
                 for i, (u, p) in enumerate(zip(units, probs))]
    return BagResult(name=bag_result.name, units=new_units, alerts=alerts, replies=list(bag_result.replies),
                     answers=dict(bag_result.answers), duration_s=bag_result.duration_s, wall_s=bag_result.wall_s,
                     origin=bag_result.origin, meta=dict(bag_result.meta))
