"""The stream timeline's outlier rule, as properties over generated two-input streams: a lone
stamp off the stream in either direction costs that message only; a jump that every input
makes restarts (or, a short pause, continues) the stream; an input alone on another clock
never moves the stream."""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.core.timeline import GROUP_LIMIT, StreamTimeline

S = 1_000_000_000
MS = 1_000_000
TICK = 100 * MS  # one frame (30 ms into the tick) and one 100 ms audio chunk per tick
T0 = 1_000 * S


def timeline() -> StreamTimeline:  # the defaults of config/roma.yaml
    return StreamTimeline(tolerance_ns=1 * S, max_jump_ns=5 * S, slack_ns=2 * S, confirm_count=3)


@dataclass
class Outcome:
    ingested: list = field(default_factory=list)  # message ids, in ingest order
    outliers: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    restarts: list = field(default_factory=list)  # position in `ingested` of each restart
    most_held: int = 0


def run(messages) -> Outcome:
    """messages: (id, modality, stamp) in arrival order."""
    line, out = timeline(), Outcome()
    for ident, modality, stamp in messages:
        decision = line.offer(modality, stamp, ident)
        if decision.stale:
            out.stale.append(ident)
        if decision.restart:
            out.restarts.append(len(out.ingested))
        out.ingested += [e.item for e in decision.ingest]
        out.outliers += [e.item for e in decision.outliers]
        out.most_held = max(out.most_held, sum(len(g) for g in line.groups.values()))
    end = line.end_of_input()
    out.ingested += [e.item for e in end.ingest]
    out.outliers += [e.item for e in end.outliers]
    return out


def ticks(first: int, count: int, shift_ns: int = 0, video_shift_ns: int = 0, jitter=None):
    """Regular messages ("v<k>", "a<k>") of ticks first..first+count-1; `jitter(k)` in ns."""
    out = []
    for k in range(first, first + count):
        wobble = jitter(k) if jitter else 0
        base = T0 + k * TICK + shift_ns
        out += [(f"a{k}", "audio", base + wobble), (f"v{k}", "video", base + 30 * MS + video_shift_ns - wobble)]
    return out


def assert_exactly_once(outcome: Outcome, ids) -> None:
    assert sorted(outcome.ingested) == sorted(set(outcome.ingested)), "a message was ingested twice"
    missing = set(ids) - set(outcome.ingested)
    assert not missing, f"regular messages lost: {sorted(missing)[:10]}"


offsets = st.one_of(st.integers(-1000 * S, -1200 * MS), st.integers(1200 * MS, 1000 * S))


@settings(max_examples=200, deadline=None)
@given(outliers=st.lists(st.tuples(st.booleans(), st.sampled_from(["video", "audio"]), offsets),
                         min_size=1, max_size=12),
       jitter_ms=st.integers(0, 40), seed=st.integers(0, 1000))
def test_lone_outliers_in_either_direction_are_dropped_and_nothing_else(outliers, jitter_ms, seed):
    """One bad stamp every few ticks, early or late by 1.2 s to 1000 s from the stream, on
    either input (and stamp jitter before): each is reported as an outlier, every regular
    message is ingested once, the stream never restarts."""
    messages = ticks(0, 10, jitter=lambda k: (k * 7919 + seed) % (2 * jitter_ms + 1) * MS - jitter_ms * MS)
    bad = []
    for i, (mid_tick, modality, offset) in enumerate(outliers):
        k = 10 + 3 * i
        messages += ticks(k, 3)
        ident = f"x{i}"
        # after tick k + 1, or between its audio and video message
        messages.insert(len(messages) - (3 if mid_tick else 2), (ident, modality, T0 + (k + 1) * TICK + offset))
        bad.append(ident)
    messages += ticks(10 + 3 * len(outliers), 3)
    outcome = run(messages)
    assert outcome.restarts == []
    assert sorted(outcome.outliers) == sorted(bad)
    assert_exactly_once(outcome, [m[0] for m in messages if m[0][0] != "x"])
    assert set(outcome.ingested).isdisjoint(bad)


@settings(max_examples=100, deadline=None)
@given(jump=st.one_of(st.integers(-1000 * S, -1500 * MS), st.integers(5200 * MS, 1000 * S)),
       before=st.integers(3, 30), after=st.integers(3, 30), video_first=st.booleans())
def test_a_jump_of_every_input_restarts_the_stream_once_and_loses_nothing(jump, before, after, video_first):
    """A bag loop (back) or a jump beyond max_forward_jump, made by both inputs. (Back by at
    least 1.5 s: a jump barely beyond restart_tolerance re-enters the old stream's window after
    fewer than jump_confirm_count messages and reads as late messages.)"""
    first = ticks(0, before)
    second = ticks(before, after, shift_ns=jump)
    if video_first:  # the camera wraps a tick before the microphone
        second[0], second[1] = second[1], second[0]
    outcome = run(first + second)
    assert_exactly_once(outcome, [m[0] for m in first + second])
    assert outcome.outliers == [] and outcome.stale == []
    assert outcome.restarts == [2 * before], "the new stream starts with the first jumped message"


@settings(max_examples=50, deadline=None)
@given(pause=st.integers(1200 * MS, 4800 * MS), before=st.integers(3, 20), after=st.integers(3, 20))
def test_a_pause_of_every_input_within_max_forward_jump_continues_the_stream(pause, before, after):
    first, second = ticks(0, before), ticks(before, after, shift_ns=pause)
    outcome = run(first + second)
    assert outcome.restarts == [] and outcome.outliers == []
    assert_exactly_once(outcome, [m[0] for m in first + second])


@settings(max_examples=100, deadline=None)
@given(offset=st.one_of(st.integers(-1000 * S, -10 * S), st.integers(10 * S, 1000 * S)),
       start=st.integers(3, 10), length=st.integers(1, 80))
def test_one_input_on_another_clock_never_moves_the_stream(offset, start, length):
    """From tick `start` on the camera's stamps are off by `offset` (another clock, a forged
    stream; off by more than the 8 s it lasts, so the stream never catches up with it)
    while the microphone goes on: no restart, all audio kept, the camera's messages are
    outliers, at most GROUP_LIMIT of them held; once the camera is back, its frames are kept."""
    messages = ticks(0, start) + ticks(start, length, video_shift_ns=offset) + ticks(start + length, 5)
    outcome = run(messages)
    assert outcome.restarts == []
    shifted = {f"v{k}" for k in range(start, start + length)}
    assert set(outcome.outliers) == shifted
    assert_exactly_once(outcome, [m[0] for m in messages if m[0] not in shifted])
    assert outcome.most_held <= GROUP_LIMIT


def test_a_lone_bogus_first_stamp_cannot_found_the_stream():
    messages = [("x", "video", T0 + 3600 * S)] + ticks(0, 5)
    outcome = run(messages)
    assert outcome.outliers == ["x"] and outcome.restarts == []
    assert_exactly_once(outcome, [m[0] for m in messages[1:]])


def test_stragglers_of_the_old_stream_are_stale_not_outliers():
    """Bag loop, the last old chunks arriving after the new stream started."""
    old, new = ticks(0, 30), ticks(0, 10, shift_ns=-20 * S)
    tail = [m for m in old[-6:] if m[1] == "audio"]
    messages = [m for m in old if m not in tail] + new[:4] + tail + new[4:]
    outcome = run(messages)
    assert len(outcome.restarts) == 1 and outcome.outliers == []
    assert outcome.stale == [m[0] for m in tail]


def fast_camera(first: int, count: int, video_shift_ns: int = 0, burst: int = 3):
    """A 30 fps camera and a 10 Hz microphone: per tick one audio chunk and three frames, the
    frames delivered `burst` at a time ahead of the chunk (executors and DDS deliver in bursts)."""
    frames = [(f"v{k}.{i}", "video", T0 + k * TICK + i * 33 * MS + video_shift_ns)
              for k in range(first, first + count) for i in range(3)]
    chunks = [(f"a{k}", "audio", T0 + k * TICK) for k in range(first, first + count)]
    out = []
    while frames or chunks:
        out += frames[:burst]
        del frames[:burst]
        if chunks:
            out.append(chunks.pop(0))
    return out


@settings(max_examples=100, deadline=None)
@given(offset=st.one_of(st.integers(-1000 * S, -10 * S), st.integers(10 * S, 1000 * S)),
       start=st.integers(3, 10), length=st.integers(1, 80), burst=st.integers(3, 9))
def test_a_fast_camera_on_another_clock_never_moves_the_stream(offset, start, length, burst):
    """The camera sends several frames between two audio chunks: its skewed frames reach
    jump_confirm_count before the microphone says anything, and still cannot restart the stream
    the microphone keeps going in."""
    messages = (fast_camera(0, start) + fast_camera(start, length, video_shift_ns=offset, burst=burst)
                + fast_camera(start + length, 5))
    outcome = run(messages)
    assert outcome.restarts == []
    shifted = {m[0] for m in fast_camera(start, length)}
    shifted = {i for i in shifted if i.startswith("v")}
    assert set(outcome.outliers) == shifted
    assert_exactly_once(outcome, [m[0] for m in messages if m[0] not in shifted])


@settings(max_examples=50, deadline=None)
@given(jump=st.one_of(st.integers(-1000 * S, -10 * S), st.integers(5200 * MS, 1000 * S)),
       before=st.integers(3, 20))
def test_a_jump_of_the_only_live_input_restarts_once_it_lasts_modality_timeout(jump, before):
    """The microphone stopped; the camera jumps (a simulator restart): the silent microphone
    holds the jump off only for modality_timeout (2 s of the camera's stamps), then the stream
    restarts with the camera's newest held frames."""
    first = ticks(0, before)
    second = [(f"v{k}", "video", T0 + k * TICK + jump) for k in range(before, before + 40)]
    outcome = run(first + second)
    assert len(outcome.restarts) == 1
    restart_at = outcome.ingested[outcome.restarts[0]]
    assert int(restart_at[1:]) < before + 2 * S // TICK + 2  # within modality_timeout (+ a tick)
    assert f"v{before + 39}" in outcome.ingested
    assert all(m[0] in outcome.ingested for m in first)
