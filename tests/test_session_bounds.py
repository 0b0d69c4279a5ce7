"""StreamSession's bounds on what comes from outside: question stamps, question and task ids."""
from __future__ import annotations

import pytest

from engine_fixtures import make_units, tiny_engine
from roma_ros.engine.session import MAX_ID_CHARS, QueryRejected, StreamSession

S = 1_000_000_000


@pytest.fixture(scope="module")
def model():
    return tiny_engine(max_context_tokens=4096)


@pytest.fixture
def session(model):
    model.reset()
    model.set_instructions([])
    return StreamSession(model, max_pending_queries=16, max_query_lead_s=10.0)


def test_questions_stamped_far_ahead_are_refused_once_the_stream_runs(session):
    units = make_units(2)
    session.process(units[0])  # the stream is at 1 s
    with pytest.raises(QueryRejected, match="ahead of the stream.*max_query_lead"):
        session.ask("what happens later?", "late", stamp_ns=12 * S)
    assert session.ask("and soon?", "soon", stamp_ns=10 * S) == "soon"  # within the lead


def test_far_future_questions_cannot_fill_the_queue_for_good(session):
    for i in range(16):  # before the first unit nothing says how far ahead they are
        session.ask(f"question {i}", f"f{i}", stamp_ns=(1000 + i) * S)
    with pytest.raises(QueryRejected, match="already waiting"):
        session.ask("one more")
    units = make_units(3)
    session.process(units[0])
    assert sorted(session.take_expired()) == sorted(f"f{i}" for i in range(16))
    assert session.take_expired() == []  # reported once
    assert session.pending_queries == 0
    assert session.ask("what do you see?", "now") == "now"
    step = session.process(units[1])
    step = session.process(units[2])
    assert any(c.chunk.query_id == "now" for c in step.chunks) or session.model.answering


def test_without_a_lead_bound_questions_may_be_scheduled_any_time_ahead(model):
    model.reset()
    session = StreamSession(model)  # offline evaluation: every question is scheduled up front
    session.ask("much later?", "late", stamp_ns=3600 * S)
    session.process(make_units(1)[0])
    assert session.take_expired() == [] and session.pending_queries == 1


@pytest.mark.parametrize("query_id, why", [
    ("ask/0123", "engine's own"), ("alert/fall", "engine's own"), ("narration/x", "engine's own"),
    ("x" * (MAX_ID_CHARS + 1), "the limit is"), ("a\nb", "control characters"), ("\x1b[31mred", "control"),
    (" padded ", "whitespace"),
])
def test_question_ids_from_outside_are_bounded_and_cannot_take_engine_ids(session, query_id, why):
    with pytest.raises(QueryRejected, match=why):
        session.ask("hello?", query_id)
    assert session.pending_queries == 0


def test_the_engine_may_use_its_own_prefixes(session):
    assert session.ask("hello?", "ask/5f2c", engine_id=True) == "ask/5f2c"


def test_two_waiting_questions_never_share_an_id(session):
    session.ask("first?", "same")
    with pytest.raises(QueryRejected, match="already waiting"):
        session.ask("second?", "same")
    assert session.withdraw("same") and not session.withdraw("same")
    assert session.ask("second?", "same") == "same"


@pytest.mark.parametrize("task_id", ["", "t" * (MAX_ID_CHARS + 1), "fall\n[ERROR] forged", "\x1b[2J"])
def test_task_ids_are_bounded_and_printable(session, task_id):
    with pytest.raises(ValueError):
        session.set_task(task_id, "alert me when someone falls")
    assert len(session.tasks) == 0


def test_an_empty_task_mode_is_refused_not_guessed(session):
    with pytest.raises(ValueError, match="mode"):
        session.set_task("fall", "alert me when someone falls", mode="")
