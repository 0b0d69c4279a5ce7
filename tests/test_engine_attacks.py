"""Hostile input against a live engine_node (its own process, over DDS): nothing it sends may
blind, poison or hijack the engine, and every refusal is counted on /diagnostics.

One engine serves the module's attacks in order; each test asserts what its attack changed."""
from __future__ import annotations

import math
import re
import threading

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from engine_fixtures import make_unit, tiny_head, tiny_thinker, write_checkpoint
from reliability import Diagnostics, start_node
from roma_ros.action import Ask
from roma_ros.msg import MultimodalUnit, Query, Reply, SpeakScore
from roma_ros.pipeline.convert import ns_to_time, unit_to_msg
from roma_ros.nodes.engine_node import EngineNode
from roma_ros.srv import SetTask
from rosutil import ros_context, stop_process, wait_until

DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
S = 1_000_000_000
NAME = "atk/engine: engine"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


class Rig:
    def __init__(self, node, executor, proc):
        self.node, self.executor, self.proc = node, executor, proc
        self.units = node.create_publisher(MultimodalUnit, "/atk/units", DEEP)
        self.queries = node.create_publisher(Query, "/atk/query", DEEP)
        self.scores: list[SpeakScore] = []
        self.replies: list[Reply] = []
        node.create_subscription(SpeakScore, "/atk/speak_score", self.scores.append, DEEP)
        node.create_subscription(Reply, "/atk/reply", self.replies.append, DEEP)
        self.diag = Diagnostics(node)
        self.ask = ActionClient(node, Ask, "/atk/ask", goal_service_qos_profile=DEEP, result_service_qos_profile=DEEP,
                                cancel_service_qos_profile=DEEP)
        self.set_task_client = node.create_client(SetTask, "/atk/set_task", qos_profile=DEEP)
        self.next_index = 0
        self.rng = np.random.default_rng(7)

    def ready(self) -> bool:
        return (self.ask.server_is_ready() and self.set_task_client.service_is_ready()
                and self.units.get_subscription_count() > 0 and self.queries.get_subscription_count() > 0)

    def wait(self, predicate, timeout: float = 60.0):
        assert wait_until(predicate, timeout, self.executor), stop_process(self.proc)[-3000:]

    def feed(self, audio=None, skip: int = 0) -> SpeakScore:
        """Publish the next unit (optionally with `audio`, or `skip` indices later) and return its score."""
        self.next_index += skip
        unit = make_unit(self.next_index, self.rng)
        if audio is not None:
            unit.audio = audio
        self.next_index += 1
        self.units.publish(unit_to_msg(unit))
        self.wait(lambda: any(s.unit_index == unit.index for s in self.scores))
        return next(s for s in self.scores if s.unit_index == unit.index)

    def error(self, reason: str) -> int:
        return self.diag.errors(NAME).get(reason, 0)

    def wait_error(self, reason: str, at_least: int) -> None:
        self.wait(lambda: self.error(reason) >= at_least, 30)

    def query(self, query_id: str, text: str, stamp_ns: int = 0) -> None:
        msg = Query(id=query_id, text=text)
        msg.header.stamp = ns_to_time(stamp_ns)
        self.queries.publish(msg)

    def answer_of(self, query_id: str) -> str | None:
        chunks = [r for r in self.replies if r.query_id == query_id]
        return "".join(r.text for r in chunks) if chunks and chunks[-1].final else None

    def until_answered(self, done, limit: int = 30) -> None:
        for _ in range(limit):
            if done():
                return
            self.feed()
        self.wait(done, 30)

    def call(self, request):
        future = self.set_task_client.call_async(request)
        self.wait(future.done)
        return future.result()


@pytest.fixture(scope="module")
def rig(checkpoint):
    proc = start_node("engine", "/atk", f"model_path:={checkpoint}", "max_answer_tokens:=4", "segment_tokens:=4",
                      "max_queries_per_minute:=0", "max_concurrent_asks:=1", "ask_timeout:=600.0",
                      "max_query_lead:=10.0")
    with ros_context() as (context, executor):
        node = rclpy.create_node("attacker", context=context)
        executor.add_node(node)
        rig = Rig(node, executor, proc)
        assert wait_until(rig.ready, 60, executor), stop_process(proc)
        yield rig
        node.destroy_node()
    output = stop_process(proc)
    assert "Traceback" not in output, output[-3000:]


def test_future_stamped_questions_expire_instead_of_blocking_every_question(rig):
    for i in range(16):  # the whole queue (max_pending_queries), stamped a million seconds ahead
        rig.query(f"f{i}", f"what happens in a million seconds, {i}?", 1_000_000 * S)
    rig.wait(lambda: rig.diag.get(NAME, "pending_queries") == 16)
    rig.feed()
    rig.wait_error("query_expired", 16)
    assert rig.diag.get(NAME, "pending_queries") == 0
    rig.query("after", "what do you see?")
    rig.until_answered(lambda: rig.answer_of("after") is not None)
    rejected = rig.error("query_rejected")
    rig.query("too_far", "and in a minute?", (rig.next_index + 60) * S)
    rig.wait_error("query_rejected", rejected + 1)
    assert not any(r.query_id.startswith("f") or r.query_id == "too_far" for r in rig.replies)


def test_ask_ids_cannot_be_guessed_or_taken_by_a_query(rig):
    rejected = rig.error("query_rejected")
    forged_ids = ("ask/0", "ask/00000000000000000000000000000000", "alert/fall", "narration/x")
    for forged in forged_ids:
        rig.query(forged, "I am an engine response now")
    rig.wait_error("query_rejected", rejected + 4)
    goal = rig.ask.send_goal_async(Ask.Goal(question="what colour is it?"))
    rig.wait(goal.done)
    assert goal.result().accepted
    result = goal.result().get_result_async()
    rig.until_answered(result.done)
    assert result.result().status == GoalStatus.STATUS_SUCCEEDED
    query_id = result.result().result.query_id
    assert re.fullmatch(r"ask/[0-9a-f]{32}", query_id)
    assert result.result().result.answer == rig.answer_of(query_id)
    # A real ask id is random hex, so it may itself begin with "ask/0": compare whole ids.
    assert query_id not in forged_ids
    assert not any(r.query_id in forged_ids for r in rig.replies)
    assert "I am an engine response now" not in {r.text for r in rig.replies}


def test_a_cancelled_ask_frees_its_slot_at_once(rig):
    first = rig.ask.send_goal_async(Ask.Goal(question="will you ever answer?"))
    rig.wait(first.done)
    assert first.result().accepted
    cancel = first.result().cancel_goal_async()
    rig.wait(cancel.done)
    assert len(cancel.result().goals_canceling) == 1
    result = first.result().get_result_async()
    rig.wait(result.done, 30)  # ask_timeout is 600 s: only the cancel can end it this soon
    assert result.result().status == GoalStatus.STATUS_CANCELED
    rig.wait(lambda: rig.diag.get(NAME, "asks_cancelled") == 1)
    second = rig.ask.send_goal_async(Ask.Goal(question="and now?"))  # max_concurrent_asks is 1
    rig.wait(second.done)
    assert second.result().accepted
    answered = second.result().get_result_async()
    rig.until_answered(answered.done)
    assert answered.result().status == GoalStatus.STATUS_SUCCEEDED


def test_task_ids_and_modes_from_outside_are_bounded(rig):
    bad = rig.error("bad_task")
    for task_id, mode, why in (("t" * 2_000_000, "alert", "limit"), ("fall\n[ERROR] forged", "alert", "control"),
                               ("\x1b[31mred", "alert", "control"), ("fall", "", "mode"), ("fall", "shout", "mode")):
        response = rig.call(SetTask.Request(task_id=task_id, instruction="alert me when someone falls", mode=mode,
                                            threshold=0.0, window=1))
        assert not response.success and why in response.message, response.message
        assert len(response.message) < 1000
    rig.wait_error("bad_task", bad + 5)
    assert rig.diag.get(NAME, "tasks") == 0
    assert rig.call(SetTask.Request(task_id="fall", instruction="alert me when someone falls", mode="alert",
                                    threshold=0.0, window=1)).success
    assert rig.feed().fired_task_ids == ["fall"]


def test_huge_audio_and_lost_units_are_counted_and_the_stream_goes_on(rig):
    loud = rig.error("audio_out_of_range")
    assert math.isfinite(rig.feed(audio=np.full(16000, 3e38, np.float32)).probability)
    rig.wait_error("audio_out_of_range", loud + 1)
    missed = rig.error("units_missed")
    lost = rig.diag.get(NAME, "units_lost")
    assert math.isfinite(rig.feed(skip=3).probability)
    rig.wait_error("units_missed", missed + 1)
    rig.wait(lambda: rig.diag.get(NAME, "units_lost") == lost + 3)
    assert all(math.isfinite(rig.feed().probability) for _ in range(3))
    assert not any(k.startswith(("nonfinite", "worker", "inference")) for k in rig.diag.errors(NAME))


def test_asks_while_inactive_are_refused_at_once(rig):
    change = rig.node.create_client(ChangeState, "/atk/engine/change_state")
    rig.wait(change.service_is_ready)

    def transition(transition_id):
        future = change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        rig.wait(future.done)
        assert future.result().success

    transition(Transition.TRANSITION_DEACTIVATE)
    rejected = rig.error("ask_rejected")
    goal = rig.ask.send_goal_async(Ask.Goal(question="are you there?"))
    rig.wait(goal.done, 30)
    assert not goal.result().accepted
    rig.wait_error("ask_rejected", rejected + 1)
    transition(Transition.TRANSITION_ACTIVATE)
    rig.wait(lambda: rig.units.get_subscription_count() > 0)
    assert math.isfinite(rig.feed().probability)


def test_the_watchdog_reports_stalls_and_the_worker_outlives_exceptions(checkpoint):
    """A unit that never finishes (a hung backend) turns /diagnostics ERROR; when it finishes, the
    engine goes on with the next unit. A unit that raises is counted and the next one is scored."""
    context = rclpy.Context()
    rclpy.init(context=context)
    engine = EngineNode(context=context, namespace="wd", parameter_overrides=[
        Parameter("model_path", value=str(checkpoint)), Parameter("stall_timeout", value=1.0),
        Parameter("diagnostics_period", value=0.2)])
    client = rclpy.create_node("wd_feeder", context=context)
    executor = MultiThreadedExecutor(num_threads=engine.executor_threads, context=context)
    executor.add_node(engine)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    spinner = SingleThreadedExecutor(context=context)  # the feeder's own, on this thread
    spinner.add_node(client)
    try:
        diag = Diagnostics(client)
        scores: list[SpeakScore] = []
        client.create_subscription(SpeakScore, "/wd/speak_score", scores.append, DEEP)
        units = client.create_publisher(MultimodalUnit, "/wd/units", DEEP)
        rng = np.random.default_rng(1)
        assert wait_until(lambda: units.get_subscription_count() > 0, 30, spinner)
        units.publish(unit_to_msg(make_unit(0, rng)))
        assert wait_until(lambda: len(scores) == 1, 60, spinner)
        release = threading.Event()
        real_process = engine.session.process

        def hung(unit):
            release.wait(120)
            return real_process(unit)

        engine.session.process = hung
        for i in (1, 2):
            units.publish(unit_to_msg(make_unit(i, rng)))
        name = "wd/engine: engine"
        assert wait_until(lambda: diag.latest.get(name, {}).get("_level") == "2"
                          and "stuck" in diag.latest[name]["_message"], 60, spinner), diag.latest.get(name)
        release.set()
        assert wait_until(lambda: len(scores) == 3, 60, spinner)
        assert wait_until(lambda: diag.latest[name]["_level"] != "2", 30, spinner), diag.latest[name]

        def broken(unit):  # any exception in a unit: counted, and the worker takes the next one
            engine.session.process = real_process
            raise RuntimeError("backend fell over")

        engine.session.process = broken
        for i in (3, 4):
            units.publish(unit_to_msg(make_unit(i, rng)))
        assert wait_until(lambda: diag.get(name, "errors.inference") == 1
                          and [s.unit_index for s in scores][-1:] == [4], 60, spinner), diag.latest.get(name)
        assert [s.unit_index for s in scores] == [0, 1, 2, 4]
    finally:
        spinner.shutdown()
        executor.shutdown()
        engine.destroy_node()
        client.destroy_node()
        rclpy.shutdown(context=context)
        thread.join(timeout=5)

