"""SIGINT and SIGTERM at any moment (loading, idle, mid-unit, inputs flowing) end either node
cleanly: exit status 0, no traceback. How fast they exit is measured in bench/bench_shutdown.py."""
import pytest

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from shutdown_stress import interrupt_at_random

RUNS = 20


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


def assert_clean(results):
    assert len(results) == RUNS
    for r in results:
        if r.returncode == -15 and not r.output:
            continue  # SIGTERM before the interpreter reached our code: the default action, nothing to clean
        assert r.returncode == 0, (r.signal, r.after_s, r.returncode, r.output[-3000:])
        assert "Traceback" not in r.output and "RCLError" not in r.output, (r.signal, r.after_s, r.output[-3000:])
        assert "shutdown:" not in r.output, r.output[-3000:]  # no cleanup step failed
    # the random moments covered both a node still starting and one at work
    assert any(r.ready for r in results) and any(not r.ready for r in results), [(r.after_s, r.ready) for r in results]


def test_the_synchronizer_stops_cleanly_whenever_it_is_interrupted():
    assert_clean(interrupt_at_random("synchronizer", RUNS, [], seed=1))


def test_the_engine_stops_cleanly_whenever_it_is_interrupted(checkpoint):
    assert_clean(interrupt_at_random("engine", RUNS, [f"model_path:={checkpoint}"], seed=2))
