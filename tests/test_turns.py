"""The engine's turn state machine (roma_ros.engine.turns), tested directly: questions asked
while the model answers wait for the end of its turn, instructions set meanwhile too (the last
wins), gated questions wait for the speak head, and no transition that does not exist happens."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roma_ros.engine.generation import Response
from roma_ros.engine.turns import Question, Turn, Turns


def test_listening_inserts_answering_holds_and_finish_hands_back_in_order():
    turns = Turns()
    first = Question("q1", "what do you see?", gated=False)
    assert turns.state is Turn.LISTENING and turns.ask(first)
    turns.inserted(first)
    assert turns.next_question(0.0, 0.5) is first
    turns.start(Response("q1", gid=1))
    assert turns.state is Turn.ANSWERING and turns.next_question(1.0, 0.5) is None
    later = [Question(f"q{i}", "and now?", gated=False) for i in (2, 3)]
    assert [turns.ask(q) for q in later] == [False, False]
    assert not turns.set_instructions(["a"]) and not turns.set_instructions(["b"])
    assert turns.pending_questions == 2
    held = turns.finish()
    assert turns.state is Turn.LISTENING
    assert held.instructions == ["b"] and held.questions == later
    assert turns.set_instructions(["c"]) and turns.held_instructions is None


def test_a_gated_question_waits_for_the_speak_head_but_respond_takes_it():
    turns = Turns()
    q = Question("q", "tell me when the kettle boils", gated=True)
    turns.inserted(q)
    assert turns.next_question(0.2, 0.5) is None and turns.pending_questions == 1
    assert turns.next_question(0.7, 0.5) is q
    turns.inserted(q)
    assert turns.next_question(None, 0.5) is q  # an explicit respond() answers regardless


def test_transitions_that_do_not_exist_are_refused():
    turns = Turns()
    with pytest.raises(RuntimeError, match="no response"):
        turns.finish()
    turns.start(Response("", gid=1))
    with pytest.raises(RuntimeError, match="already"):
        turns.start(Response("", gid=2))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["ask", "unit", "finish"]), max_size=40))
def test_every_question_is_answered_once_in_the_order_asked(ops):
    """Random interleavings of questions, units (a waiting question starts an answer) and ends of
    answers: answers start in the order the questions were asked, none twice, none lost."""
    turns, asked, answered = Turns(), [], []
    for op in ops + ["finish", "unit"] * 45:
        if op == "ask":
            q = Question(f"q{len(asked)}", "?", gated=False)
            asked.append(q.query_id)
            if turns.ask(q):
                turns.inserted(q)
        elif op == "unit" and (q := turns.next_question(0.0, 0.5)) is not None:
            turns.start(Response(q.query_id, gid=0))
            answered.append(q.query_id)
        elif op == "finish" and turns.state is Turn.ANSWERING:
            for q in turns.finish().questions:
                turns.inserted(q)
    assert answered == asked
