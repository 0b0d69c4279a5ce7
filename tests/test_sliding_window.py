"""The sliding window behind max_queries_per_minute: events older than the window stop counting."""
from roma_ros.core.sliding_window import SlidingWindow


def test_events_leave_the_window_after_window_seconds():
    now = [100.0]
    window = SlidingWindow(60.0, clock=lambda: now[0])
    for t in (100.0, 110.0, 159.9):
        now[0] = t
        window.record()
    assert window.count() == 3
    now[0] = 160.0  # the first event is exactly 60 s old: out
    assert window.count() == 2
    now[0] = 219.8
    assert window.count() == 1
    now[0] = 1000.0
    assert window.count() == 0
