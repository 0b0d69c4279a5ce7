"""Decision rules (docs/model.md section 7) and task bookkeeping: property tests."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.core.tasks import Task, TaskSet
from roma_ros.core.triggers import NS, TriggerRule, TriggerState

probs_st = st.lists(st.floats(0, 1), min_size=0, max_size=80)
rule_st = st.builds(TriggerRule, threshold=st.floats(0, 1), window=st.integers(1, 6),
                    cooldown_s=st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.5]), mode=st.sampled_from(["alert", "narration"]))


def run(rule, probs):
    s = TriggerState(rule, "t")
    return [s.update(i, i * NS, (i + 1) * NS, p) for i, p in enumerate(probs)]


def reference(rule, probs):
    """Brute force: fire at i if the w units ending at i are >= thr, none of them was used by a
    previous trigger, and the cooldown since the last trigger has passed."""
    fired, last_t, used_until = [], None, -1
    for i in range(len(probs)):
        lo = i - rule.window + 1
        if lo <= used_until or lo < 0:
            continue
        if all(p >= rule.threshold for p in probs[lo: i + 1]):
            t = (i + 1) * NS
            if last_t is None or t >= last_t + round(rule.cooldown_s * NS):
                fired.append(i)
                last_t, used_until = t, i
    return fired


@settings(max_examples=300, deadline=None)
@given(rule_st, probs_st)
def test_matches_reference_and_properties(rule, probs):
    out = run(rule, probs)
    fired = [i for i, t in enumerate(out) if t is not None]
    assert fired == reference(rule, probs)
    for i in fired:
        t = out[i]
        assert all(p >= rule.threshold for p in probs[i - rule.window + 1: i + 1])  # w consecutive units
        assert t.time_ns == (i + 1) * NS and t.window_start_ns == (i - rule.window + 1) * NS  # end of window
        assert t.mode == rule.mode and t.task_id == "t" and t.prob == probs[i]
    for a, b in zip(fired, fired[1:]):
        assert b - a >= rule.window
        assert out[b].time_ns - out[a].time_ns >= round(rule.cooldown_s * NS)


@settings(max_examples=100, deadline=None)
@given(rule_st, st.integers(0, 60))
def test_constant_high_fires_every_window_without_cooldown(rule, n):
    r = TriggerRule(rule.threshold, rule.window, 0.0, rule.mode)
    fired = [i for i, t in enumerate(run(r, [1.0] * n)) if t]
    assert fired == list(range(r.window - 1, n, r.window))
    assert not any(run(TriggerRule(0.9, rule.window), [0.5] * n))


def test_paper_settings_and_gaps():
    pa = TriggerRule(0.5, 5)
    probs = [0.6, 0.7, 0.8, 0.9, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6]
    fired = [i for i, t in enumerate(run(pa, probs)) if t]
    assert fired == [9]
    s = TriggerState(TriggerRule(0.5, 2))
    assert s.update(0, 0, NS, 0.9) is None
    assert s.update(2, 2 * NS, 3 * NS, 0.9) is None  # unit 1 missing: the run restarts
    assert s.update(3, 3 * NS, 4 * NS, 0.9) is not None
    assert s.update(4, 4 * NS, 5 * NS, 0.9) is None
    assert s.update(5, 5 * NS, 6 * NS, 0.9, restart=True) is None


@pytest.mark.parametrize("kw", [dict(threshold=1.5), dict(window=0), dict(cooldown_s=-1), dict(mode="shout")])
def test_rule_validation(kw):
    with pytest.raises(ValueError):
        TriggerRule(**kw)


def test_taskset_bookkeeping():
    ts = TaskSet()
    assert ts.set(Task("fall", "Alert me when someone falls.", TriggerRule(0.6, 2, 5.0)))
    assert ts.set(Task("cook", "Narrate the cooking.", TriggerRule(0.97, 1, mode="narration")))
    assert not ts.set(Task("fall", "Alert me when someone falls.", TriggerRule(0.7, 2, 5.0)))  # rule only
    assert ts.instructions() == ["Alert me when someone falls.", "Narrate the cooking."]
    out = [ts.update(i, i * NS, (i + 1) * NS, 0.98) for i in range(3)]
    assert [[t.task_id for t in o] for o in out] == [["cook"], ["fall", "cook"], ["cook"]]
    assert ts.clear("cook") and not ts.clear("cook") and len(ts) == 1
    with pytest.raises(ValueError):
        Task("", "x")
    assert ts.clear() and len(ts) == 0
