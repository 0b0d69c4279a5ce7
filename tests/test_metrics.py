"""Metrics: a worked example per rule (numbers done by hand in the comments), plus properties."""
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.core.triggers import TriggerRule, TriggerState
from roma_ros.eval.annotations import parse_annotations
from roma_ros.eval.metrics import (
    combine,
    crr_success,
    delay_stats,
    detection_delays,
    effective_rule,
    evaluate,
    false_alarms,
    false_alarms_per_hour,
    narration_f1,
    normalize_answer,
    pa_success,
    po_success,
    prf,
    qa_accuracy,
    qa_correct,
    rec_success,
    replay_triggers,
    score_triggers,
    success_counts,
    sweep,
    token_f1,
)
from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord

FAST = settings(max_examples=60, deadline=None)


def ok(outcomes):
    return [o.success for o in outcomes]


# --- PA / PO / REC / CRR -------------------------------------------------------------------------


def test_pa_first_trigger_inside_the_interval():
    # event [5, 9]: the first trigger (7) is inside -> success, the later 8 does not matter
    assert ok(pa_success([7, 8], [[5, 9]])) == [True]
    assert ok(pa_success([5], [[5, 9]])) == [True]  # closed interval: both ends count
    assert ok(pa_success([9], [[5, 9]])) == [True]
    assert ok(pa_success([3, 7], [[5, 9]])) == [False]  # first trigger too early
    assert ok(pa_success([9.5], [[5, 9]])) == [False]  # too late
    assert ok(pa_success([], [[5, 9]])) == [False]  # missed
    outcome = pa_success([3, 7], [[5, 9]])[0]
    assert (outcome.start, outcome.end, outcome.response_s) == (5, 9, 3)  # the deciding (early) trigger


def test_pa_episodes_for_several_events():
    # events [5, 9] and [20, 25]. Episode 0: t > 0 -> first trigger 7 in [5, 9] -> success.
    # Episode 1: t > 9 -> first trigger 15 is before 20 -> early -> failure.
    assert ok(pa_success([7, 8, 15, 22], [[20, 25], [5, 9]])) == [True, False]
    # Episode 1 again, now its first trigger (9.5 is after the end 9 of event 0... and before 20) fails,
    # while a stream whose only triggers after 9 fall in [20, 25] succeeds.
    assert ok(pa_success([6, 21, 30], [[5, 9], [20, 25]])) == [True, True]
    # An early trigger of event 0 does not spoil event 1.
    assert ok(pa_success([2, 24], [[5, 9], [20, 25]])) == [False, True]
    # Triggers at or before ask_time are ignored (the task was not set yet).
    assert ok(pa_success([2, 6], [[5, 9]], ask_time=3)) == [True]
    assert success_counts(pa_success([6, 21], [[5, 9], [20, 25], [40, 41]])) == {"hits": 2, "n": 3, "rate": 2 / 3}


def test_po_within_two_seconds():
    # GT 10 s, tolerance 2: the first response must be in [8, 12]
    assert ok(po_success([12.0], [10])) == [True]
    assert ok(po_success([8.0], [10])) == [True]
    assert ok(po_success([12.5], [10])) == [False]
    assert ok(po_success([7.9, 10.0], [10])) == [False]  # the first response counts, and it is early
    assert ok(po_success([11], [10], tolerance=0.5)) == [False]
    # Two GT times 10 and 30: episode 1 starts after 12; first trigger after 12 is 29 -> success.
    outcomes = po_success([9, 12, 29], [30, 10])
    assert ok(outcomes) == [True, True]
    assert [(o.start, o.end, o.response_s) for o in outcomes] == [(10, 10, 9), (30, 30, 29)]


def test_rec_micro_success():
    # three repetitions; triggers at 3 and 4 hit the first, 26 hits none -> 1 of 3
    outcomes = rec_success([3, 4, 26], [[0, 5], [10, 15], [20, 25]])
    assert ok(outcomes) == [True, False, False]
    assert outcomes[0].response_s == 3
    assert success_counts(outcomes)["rate"] == pytest.approx(1 / 3)
    assert ok(rec_success([15], [[10, 15]])) == [True]  # closed


def test_crr_first_response_after_the_ask_must_follow_the_clue():
    # asked at 10, clue visible at 20
    assert crr_success([5, 21], 10, 20).success  # 5 is before the ask and ignored; first after = 21
    assert not crr_success([5, 15, 21], 10, 20).success  # first after the ask (15) guessed before the clue
    assert crr_success([20], 10, 20).success  # at the clue time counts
    assert not crr_success([10], 10, 20).success  # t == ask_time is not after the ask
    assert not crr_success([], 10, 20).success
    o = crr_success([5, 21], 10, 20)
    assert (o.start, o.end, o.response_s) == (10, 20, 21)


# --- narration -------------------------------------------------------------------------------------


def test_narration_f1_worked_example():
    # windows [0,10) [10,20) [30,40); predictions 2 5 10 25 45
    # 2 -> TP (window 0); 5 -> FP (window 0 again); 10 -> TP (window 1, half-open);
    # 25 -> FP (outside); 45 -> FP (outside); window 2 unmatched -> FN.
    r = narration_f1([45, 10, 2, 25, 5], [[30, 40], [0, 10], [10, 20]])
    assert (r["tp"], r["fp"], r["fn"]) == (2, 3, 1)
    assert r["precision"] == pytest.approx(0.4)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(0.5)  # 2 * 0.4 * 0.667 / 1.067
    assert r["matches"] == [(0, 2.0), (1, 10.0)]
    assert narration_f1([40], [[30, 40]])["tp"] == 0  # end excluded


def test_empty_cases_follow_the_conventions():
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)
    assert prf(0, 0, 3) == (1.0, 0.0, 0.0)
    assert prf(0, 2, 0) == (0.0, 1.0, 0.0)
    assert narration_f1([], [])["f1"] == 1.0
    assert narration_f1([], [[0, 1]])["f1"] == 0.0


def test_token_f1():
    assert token_f1("He cracks two eggs.", "cracks 2 eggs into the bowl") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a b", "c d") == 0.0


# --- QA -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, norm", [
    ("The Red Mug!", "red mug"),
    ("  It's  an apple, isn't it? ", "its apple isnt it"),
    ("Two people", "2 people"),
    ("red-brown", "red brown"),
    ("ＲＥＤ", "red"),  # full-width letters (NFKC)
    ("3.5 kg", "3 5 kg"),
])
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


@pytest.mark.parametrize("answer, accepted, correct", [
    ("red", ["red"], True),
    ("It is red.", ["red"], True),  # contained as a whole word
    ("The mug is dark red.", ["dark red"], True),
    ("bored", ["red"], False),  # not a whole word
    ("Red!", ["blue", "RED"], True),  # any accepted answer
    ("There are two people.", ["2"], True),  # number words
    ("blue", ["red"], False),
    ("", ["red"], False),
    (None, ["red"], False),
])
def test_qa_correct(answer, accepted, correct):
    assert qa_correct(answer, accepted) is correct


def test_qa_accuracy():
    r = qa_accuracy([("It is red.", ["red"]), ("blue", ["red"]), (None, ["x"]), ("anything", [])])
    assert r == {"correct": 1, "n": 3, "accuracy": pytest.approx(1 / 3)}
    assert qa_accuracy([])["accuracy"] is None


# --- robot metrics ------------------------------------------------------------------------------


def test_false_alarms_per_hour():
    # window [10, 20]; triggers 5 (FA), 15 (ok), 21 (FA), 22.5 (FA) -> 3 in half an hour = 6/h
    trig = [5, 15, 21, 22.5]
    assert false_alarms(trig, [[10, 20]]) == 3
    assert false_alarms_per_hour(trig, [[10, 20]], duration_s=1800) == pytest.approx(6.0)
    # with 1 s tolerance 21 is accepted: [9, 21]
    assert false_alarms(trig, [[10, 20]], tolerance=1.0) == 2
    assert false_alarms([1, 2], []) == 2  # negative stream: every trigger is false
    assert false_alarms([20], [[10, 20]], half_open=True) == 1  # narration windows exclude their end
    assert false_alarms_per_hour([1], [], duration_s=0) is None
    # point event (po) with its tolerance
    assert false_alarms([8, 12.1], [10], tolerance=2.0) == 1


def test_detection_delays():
    # events [10,20] [30,40] [50,60]; first triggers inside: 12 (delay 2), 35 (delay 5), none in [50, 60]
    d = detection_delays([70, 35, 13, 12], [[50, 60], [30, 40], [10, 20]])
    assert d["delays_s"] == [2.0, 5.0]
    assert (d["n_events"], d["n_detected"]) == (3, 2)
    assert d["median"] == 3.5
    assert d["p90"] == pytest.approx(4.7)  # 2 + 0.9 * (5 - 2)
    assert d["max"] == 5.0 and d["mean"] == 3.5
    # a tolerance lets an early trigger count, with a negative delay
    assert detection_delays([9], [[10, 20]], tolerance=1.0)["delays_s"] == [-1.0]
    assert delay_stats([]) == {"n": 0, "median": None, "p90": None, "max": None, "mean": None, "delays_s": []}


# --- replaying the rule and the sweep --------------------------------------------------------------


def _units(probs, t0=0.0):
    return list(probs), [t0 + i for i in range(len(probs))], [t0 + i + 1 for i in range(len(probs))]


def test_replay_uses_the_core_rule():
    probs, starts, ends = _units([0.1, 0.6, 0.7, 0.8, 0.2, 0.9, 0.9])
    # w=2, thr 0.5: units 1,2 -> trigger at end of unit 2 (3.0), window start 1.0; the run restarts,
    # unit 3 alone is not enough; units 5,6 -> trigger at 7.0
    trig = replay_triggers(probs, starts, ends, 0.5, 2)
    assert [(t.time_s, t.unit_index, t.window_start_s) for t in trig] == [(3.0, 2, 1.0), (7.0, 6, 5.0)]
    # cooldown 5 s: the second trigger (7.0 < 3.0 + 5) is suppressed
    assert [t.time_s for t in replay_triggers(probs, starts, ends, 0.5, 2, cooldown_s=5)] == [3.0]
    # an index gap resets the run (units 1 and 3 are not consecutive)
    assert replay_triggers([0.9, 0.9], [0, 2], [1, 3], 0.5, 2, indices=[1, 3]) == []
    # units ending at or before ask_time are not seen
    # (units 0 and 1 are skipped; units 2, 3 -> 4.0; units 5, 6 -> 7.0)
    assert [t.time_s for t in replay_triggers(probs, starts, ends, 0.5, 2, ask_time=2.0)] == [4.0, 7.0]
    # NaN never fires
    assert replay_triggers([math.nan], [0], [1], 0.0, 1) == []


@given(st.lists(st.floats(0, 1), max_size=40), st.floats(0, 1), st.integers(1, 4), st.sampled_from([0.0, 2.0]))
@FAST
def test_replay_matches_trigger_state(probs, thr, w, cooldown):
    state = TriggerState(TriggerRule(threshold=thr, window=w, cooldown_s=cooldown))
    expected = []
    for i, p in enumerate(probs):
        t = state.update(i, i * 10**9, (i + 1) * 10**9, p)
        if t is not None:
            expected.append(t.time_ns / 1e9)
    got = [t.time_s for t in replay_triggers(*_units(probs), thr, w, cooldown)]
    assert got == expected


def test_sweep_worked_example():
    # 10 units; the event is [4, 7]; high probabilities on units 3..5 (ends 4..6) and a blip on unit 8
    probs, starts, ends = _units([0.1, 0.1, 0.1, 0.8, 0.9, 0.8, 0.1, 0.1, 0.7, 0.1])
    r = sweep(probs, starts, ends, [[4, 7]], thresholds=[0.5, 0.75], windows=[1, 2])
    rows = {(row["threshold"], row["window"]): row for row in r["table"]}
    # thr 0.5, w 1: triggers 4, 5, 6 (inside) and 9 (false) -> P 3/4, R 1, F1 6/7
    assert rows[(0.5, 1)]["n_triggers"] == 4 and rows[(0.5, 1)]["precision"] == 0.75
    assert rows[(0.5, 1)]["f1"] == pytest.approx(6 / 7)
    # thr 0.75, w 1: triggers 4, 5, 6 -> P 1, R 1
    assert (rows[(0.75, 1)]["precision"], rows[(0.75, 1)]["recall"]) == (1.0, 1.0)
    # thr 0.5, w 2: units 3,4 -> 5; unit 5 alone no (run restarted); unit 8 alone no -> P 1, R 1
    assert rows[(0.5, 2)]["n_triggers"] == 1 and rows[(0.5, 2)]["f1"] == 1.0
    # thr 0.75, w 2: units 3,4 -> 5 -> P 1, R 1
    assert rows[(0.75, 2)]["n_triggers"] == 1
    # three rows tie at F1 1, P 1, R 1 -> smaller window (1), then higher threshold (0.75)
    assert (r["best"]["threshold"], r["best"]["window"]) == (0.75, 1)
    assert [(row["window"], row["threshold"]) for row in r["table"]] == [(1, 0.5), (1, 0.75), (2, 0.5), (2, 0.75)]


def test_sweep_narration_scoring():
    probs, starts, ends = _units([0.99, 0.99, 0.1, 0.1, 0.99])
    # windows [0, 3) and [3, 5); w=1, thr 0.9: predictions 1, 2, 5 -> 1 TP (2 is a duplicate, 5 is at
    # the end of [3, 5) -> outside) -> TP 1, FP 2, FN 1
    r = sweep(probs, starts, ends, [[0, 3], [3, 5]], thresholds=[0.9], windows=[1], scoring="narration")
    row = r["table"][0]
    assert (row["tp"], row["fp"], row["fn"]) == (1, 2, 1)
    with pytest.raises(ValueError):
        score_triggers([1.0], [[0, 2]], scoring="bogus")


# --- properties -------------------------------------------------------------------------------------

times = st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 1))


@st.composite
def disjoint_events(draw, max_events=5):
    cuts = sorted(set(draw(st.lists(times, max_size=2 * max_events))))
    events = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    return [(s, e) for s, e in events if e > s]


@given(st.lists(times, max_size=20), disjoint_events())
@FAST
def test_narration_f1_properties(preds, windows):
    r = narration_f1(preds, windows)
    assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
    assert r["tp"] + r["fp"] == len(preds)
    assert r["tp"] + r["fn"] == len(windows)


@given(st.lists(times, max_size=15), disjoint_events(), st.randoms(use_true_random=False))
@FAST
def test_results_do_not_depend_on_order(trig, events, rnd):
    shuffled_e, shuffled_t = list(events), list(trig)
    rnd.shuffle(shuffled_e)
    rnd.shuffle(shuffled_t)
    assert pa_success(trig, events) == pa_success(shuffled_t, shuffled_e)
    assert rec_success(trig, events) == rec_success(shuffled_t, shuffled_e)
    points = [s for s, _ in events]
    assert po_success(trig, points) == po_success(shuffled_t, [s for s, _ in shuffled_e])
    assert narration_f1(trig, events)["f1"] == narration_f1(shuffled_t, shuffled_e)["f1"]
    assert false_alarms(trig, events, 1.0) == false_alarms(shuffled_t, shuffled_e, 1.0)
    assert detection_delays(trig, events) == detection_delays(shuffled_t, shuffled_e)


@given(disjoint_events(), st.lists(st.floats(0, 1), max_size=30), st.floats(0, 2))
@FAST
def test_no_false_alarms_when_every_trigger_is_inside(events, fractions, tol):
    # clamped: s + 1.0 * (e - s) can round to just past e (8.2 + 32.7 = 40.900000000000006)
    trig = [min(e, s + f * (e - s)) for (s, e), f in zip(events * 10, fractions)]
    assert false_alarms(trig, events, tol) == 0
    assert score_triggers(trig, events)["precision"] == 1.0


@given(disjoint_events(), st.lists(times, max_size=10))
@FAST
def test_pa_success_implies_rec_success(events, trig):
    for pa, rec in zip(pa_success(trig, events), rec_success(trig, events)):
        assert not pa.success or rec.success


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), disjoint_events(), st.integers(1, 4))
@FAST
def test_sweep_monotonic_in_threshold(probs, events, w):
    thresholds = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    r = sweep(*_units(probs), events, thresholds=thresholds, windows=[1, w])
    for window in {1, w}:
        rows = [row for row in r["table"] if row["window"] == window]
        counts = [row["n_triggers"] for row in rows]
        # without cooldown a higher threshold only splits runs: never more triggers
        assert counts == sorted(counts, reverse=True)
        if window == 1:
            # w=1, no cooldown: every unit >= thr fires, a subset as thr rises -> recall non-increasing
            recalls = [row["recall"] for row in rows]
            assert recalls == sorted(recalls, reverse=True)
    for row in r["table"]:
        assert 0.0 <= row["f1"] <= 1.0
    best = r["best"]
    assert all((row["f1"], row["precision"]) <= (best["f1"], best["precision"]) for row in r["table"])


@given(st.text(max_size=30))
@FAST
def test_normalize_is_idempotent_and_self_matching(text):
    norm = normalize_answer(text)
    assert normalize_answer(norm) == norm
    if norm:
        assert qa_correct(text, [text])


# --- evaluate / combine ------------------------------------------------------------------------------


def _annotations():
    return parse_annotations({
        "version": 1,
        "tasks": [
            {"id": "fall", "instruction": "Alert me when someone falls.", "threshold": 0.5, "window": 2,
             "events": [[4, 7], [14, 17]]},
            {"id": "door", "instruction": "Say when the door opens.", "metric": "po", "events": [10]},
            {"id": "rep", "instruction": "Say each time he jumps.", "metric": "rec", "events": [[1, 3], [8, 9]]},
            {"id": "who", "instruction": "Who took it?", "metric": "crr", "ask_time": 2, "clue_time": 12},
            {"id": "cook", "instruction": "Narrate.", "mode": "narration",
             "events": [{"start": 0, "end": 5, "text": "eggs into the bowl"}, [5, 10]]},
        ],
        "queries": [
            {"id": "mug", "time": 5, "text": "Mug color?", "answers": ["red"]},
            {"id": "n", "time": 11, "text": "How many?", "answers": ["two"], "clue_time": 13},
            {"id": "free", "time": 15, "text": "Anything?"},
        ],
    })


def _bag():
    probs = [0.1, 0.2, 0.3, 0.6, 0.7, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    units = [UnitRecord(i, float(i), float(i + 1), p) for i, p in enumerate(probs)]
    alerts = [
        AlertRecord("fall", 5.0, 4, 0.7, 3.0, "fall"),  # event 1 [4, 7]: success, delay 1
        AlertRecord("fall", 12.0, 11, 0.6, 10.0, "fall"),  # episode 2 (t > 7): before 14 -> early; FA
        AlertRecord("door", 11.5, 11, 0.6, 10.5, "door"),  # |11.5 - 10| <= 2: success
        AlertRecord("rep", 2.0, 1, 0.6, 1.0, "jump"),  # first repetition hit, second missed
        AlertRecord("who", 1.0, 0, 0.6, 0.0, "x"),  # before the ask: ignored
        AlertRecord("who", 13.0, 12, 0.6, 12.0, "Bob"),  # first after the ask, after the clue: success
        AlertRecord("cook", 2.0, 1, 0.9, 1.0, "He puts eggs into a bowl", "narration"),  # TP
        AlertRecord("cook", 3.0, 2, 0.9, 2.0, "again", "narration"),  # FP (same window)
        AlertRecord("cook", 12.0, 11, 0.9, 11.0, "later", "narration"),  # FP (outside); window 2 FN
        AlertRecord("ghost", 3.0, 2, 0.9, 2.0, "?"),  # a task the annotations do not know
    ]
    replies = [ReplyRecord("mug", 6.0, "It is ", False, 5), ReplyRecord("mug", 7.0, "red.", True, 6),
               ReplyRecord("n", 12.0, "three", True, 11)]
    return BagResult("b1", units, alerts, replies, {"mug": "It is red."}, duration_s=20.0, wall_s=10.0)


def test_evaluate_worked_example():
    m = evaluate(_bag(), _annotations(), thresholds=[0.5, 0.65], windows=[1, 2])
    json.dumps(m, allow_nan=False)  # serializable as is
    t = m["tasks"]
    assert t["fall"]["rule"] == {"threshold": 0.5, "window": 2, "cooldown_s": 0.0}
    assert [e["success"] for e in t["fall"]["events"]] == [True, False]
    assert t["fall"]["false_alarms"] == {"count": 1, "per_hour": pytest.approx(180.0)}  # 1 in 20 s
    assert t["fall"]["detection_delay"]["delays_s"] == [1.0]
    assert t["door"]["success"]["hits"] == 1 and t["door"]["tolerance_s"] == 2.0
    assert t["rep"]["success"] == {"hits": 1, "n": 2, "rate": 0.5}
    assert t["who"]["success"]["hits"] == 1 and t["who"]["n_triggers"] == 1 and "false_alarms" not in t["who"]
    nar = t["cook"]["narration"]
    assert (nar["tp"], nar["fp"], nar["fn"]) == (1, 2, 1)
    assert nar["text_similarity"] == pytest.approx(token_f1("He puts eggs into a bowl", "eggs into the bowl"))
    # sweep of fall over the recorded probabilities: thr 0.5 w 2 -> units 3,4 -> trigger 5 in [4, 7]
    row = next(r for r in t["fall"]["sweep"]["table"] if (r["threshold"], r["window"]) == (0.5, 2))
    assert (row["n_triggers"], row["precision"], row["recall"]) == (1, 1.0, 0.5)
    q = m["queries"]
    assert q["mug"]["correct"] is True and q["mug"]["latency_s"] == 1.0 and q["mug"]["final_reply_s"] == 7.0
    assert q["n"]["correct"] is False and q["n"]["crr"] is False  # answered at 12, clue at 13
    assert q["free"]["correct"] is None and q["free"]["answer"] is None
    o = m["overall"]
    assert o["pa"] == {"hits": 1, "n": 2, "rate": 0.5}
    assert o["po"]["rate"] == 1.0 and o["rec"]["rate"] == 0.5
    assert o["crr"] == {"hits": 1, "n": 2, "rate": 0.5}  # task who (ok) + query n (too early)
    assert o["narration"]["f1"] == pytest.approx(prf(1, 2, 1)[2])
    assert o["qa"] == {"correct": 1, "n": 2, "accuracy": 0.5}
    # false alarms: fall 1, door 0, rep 0, cook 1 (12 outside [0, 10]) -> 2 in 20 s
    assert o["false_alarms"]["count"] == 2 and o["false_alarms"]["per_hour"] == pytest.approx(360.0)
    assert m["real_time_factor"] == 0.5 and m["speed_x_real_time"] == 2.0  # 20 s of stream in 10 s
    assert m["unannotated_task_ids"] == ["ghost"]


def test_evaluate_rules_and_no_sweep():
    ann = _annotations()
    rules = {"fall": TriggerRule(0.9, 3, 4.0)}
    m = evaluate(_bag(), ann, rules=rules, default_rule=TriggerRule(0.3, 1, 1.0), thresholds=None)
    assert m["tasks"]["fall"]["rule"] == {"threshold": 0.9, "window": 3, "cooldown_s": 4.0}
    assert m["tasks"]["door"]["rule"] == {"threshold": 0.3, "window": 1, "cooldown_s": 1.0}
    assert "sweep" not in m["tasks"]["fall"]
    assert effective_rule(ann.task("fall"), TriggerRule(0.3, 1, 1.0)) == TriggerRule(0.5, 2, 1.0)
    assert effective_rule(ann.task("cook")).mode == "narration"


def test_evaluate_empty_bag():
    m = evaluate(BagResult("empty"), _annotations())
    assert m["overall"]["pa"]["hits"] == 0 and m["overall"]["false_alarms"]["per_hour"] is None
    assert m["real_time_factor"] is None and m["speed_x_real_time"] is None
    json.dumps(m, allow_nan=False)


def test_combine_is_micro():
    ann = _annotations()
    m1 = evaluate(_bag(), ann, thresholds=None)
    bag2 = _bag()
    bag2.name, bag2.alerts, bag2.duration_s = "b2", [], 40.0
    m2 = evaluate(bag2, ann, thresholds=None)
    c = combine([m1, m2])
    o = c["overall"]
    assert o["pa"] == {"hits": 1, "n": 4, "rate": 0.25}
    assert o["rec"] == {"hits": 1, "n": 4, "rate": 0.25}
    assert (o["narration"]["tp"], o["narration"]["fp"], o["narration"]["fn"]) == (1, 2, 3)
    assert o["false_alarms"]["count"] == 2 and o["false_alarms"]["hours"] == pytest.approx(60 / 3600)
    assert o["qa"]["n"] == 4
    assert c["bags"] == ["b1", "b2"] and c["duration_s"] == 60.0


def test_shuffled_records_give_the_same_metrics():
    bag = _bag()
    rnd = random.Random(3)
    rnd.shuffle(bag.alerts)
    rnd.shuffle(bag.units)
    a = evaluate(bag, _annotations(), thresholds=[0.5], windows=[2])
    b = evaluate(_bag(), _annotations(), thresholds=[0.5], windows=[2])
    assert a == b
