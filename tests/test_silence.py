"""SilenceDetector: silence after modality_timeout of observed time, stalls not counted."""
from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.core.silence import SilenceDetector

MS = 1_000_000
TIMEOUT = 2000 * MS


def test_a_quiet_input_goes_silent_after_the_timeout_of_regular_checks():
    d = SilenceDetector(("video", "audio"), TIMEOUT)
    assert d.check(0) == []  # nothing received yet: nothing counts
    d.arrived("video", 0)
    d.arrived("audio", 0)
    for t in range(100, 2000, 100):
        d.arrived("audio", t * MS)
        assert d.check(t * MS) == []
    d.arrived("audio", 2000 * MS)
    assert d.check(2000 * MS) == ["video"]
    assert d.check(2100 * MS) == ["video"]  # still silent until a message comes
    d.arrived("video", 2150 * MS)
    assert d.check(2200 * MS) == []


def test_a_stall_counts_as_one_step_not_as_silence():
    d = SilenceDetector(("video", "audio"), TIMEOUT)
    d.arrived("video", 0)
    d.arrived("audio", 0)
    assert d.check(100 * MS) == []
    assert d.check(30_000 * MS) == []  # the process stalled for 30 s: messages are still queued
    assert d.stalls == 1
    assert d.quiet_ns("audio") == TIMEOUT // 2 + 100 * MS
    d.arrived("video", 30_001 * MS)  # the backlog arrives
    d.arrived("audio", 30_001 * MS)
    assert d.check(30_100 * MS) == []


def test_the_clock_going_back_restarts_the_count():
    d = SilenceDetector(("video", "audio"), TIMEOUT)
    d.arrived("video", 10_000 * MS)
    d.arrived("audio", 10_000 * MS)
    for t in range(10_100, 11_900, 100):
        assert d.check(t * MS) == []
    assert d.check(1_000 * MS) == []  # a looping bag on sim time
    for t in range(1_100, 2_900, 100):
        assert d.check(t * MS) == []
    assert d.check(3_000 * MS) == ["video", "audio"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.booleans(), st.booleans()), min_size=1, max_size=80))
def test_silence_needs_timeout_of_quiet_with_no_step_above_max(events):
    """For any sequence of checks (gaps in ms) with or without arrivals: a modality is reported
    silent exactly when the time since its last message, counting each gap at most
    max_step, reaches the timeout."""
    d = SilenceDetector(("video", "audio"), TIMEOUT)
    now = 0
    d.arrived("video", now)
    d.arrived("audio", now)
    credited = {"video": 0, "audio": 0}
    for gap_ms, video_came, audio_came in events:
        now += gap_ms * MS
        step = min(gap_ms * MS, d.max_step_ns)
        silent = d.check(now)
        for m in credited:
            credited[m] += step
        assert silent == [m for m in ("video", "audio") if credited[m] >= TIMEOUT]
        for m, came in (("video", video_came), ("audio", audio_came)):
            if came:
                d.arrived(m, now)
                credited[m] = 0
