"""The engine's stall watchdog, on a clock we move: a unit stuck in the model and units waiting
while none finishes are stalls; slow-but-working is not (the limit follows the model's speed)."""
from roma_ros.pipeline.watchdog import Watchdog


def make():
    now = [0.0]
    return Watchdog(clock=lambda: now[0]), now


def test_before_the_first_unit_the_limit_is_four_times_the_timeout():
    dog, now = make()
    dog.started()
    now[0] = 119.0
    assert dog.stall(30.0, queued=0) == ""
    now[0] = 121.0
    assert "one unit has been processing for 121 s" in dog.stall(30.0, queued=0)


def test_units_waiting_without_progress_are_a_stall_but_an_idle_queue_is_not():
    dog, now = make()
    dog.started()
    now[0] = 1.0
    dog.record_latency(100.0)
    dog.finished()
    now[0] = 40.0
    assert dog.stall(30.0, queued=0) == ""  # nothing waits: idle
    assert "units are waiting but none was processed for 39 s" in dog.stall(30.0, queued=2)
    dog.idle()
    assert dog.stall(30.0, queued=2) == ""


def test_a_slow_model_gets_twenty_median_latencies():
    dog, now = make()
    for _ in range(5):
        dog.started()
        now[0] += 5.0
        dog.record_latency(5000.0)
        dog.finished()
    assert dog.median_latency_ms == 5000.0
    dog.started()
    now[0] += 90.0
    assert dog.stall(30.0, queued=1) == ""  # 90 s < 20 x 5 s
    now[0] += 20.0
    assert "the engine is stuck" in dog.stall(30.0, queued=1)
