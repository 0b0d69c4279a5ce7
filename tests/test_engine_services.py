"""engine_node's services under a burst: every request is answered, none silently dropped.

Service callbacks wait for the model while the engine works, so requests queue in DDS. With the
ROS default service QoS (keep last 10) a burst of 100 set_task calls got 11 answers and left the
other callers waiting forever; `qos.services` (keep all by default) fixes that."""
from __future__ import annotations

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from engine_fixtures import make_units, tiny_head, tiny_thinker, write_checkpoint
from reliability import start_node
from roma_ros.action import Ask
from roma_ros.msg import MultimodalUnit, SpeakScore
from roma_ros.pipeline.convert import unit_to_msg
from roma_ros.nodes.qos import qos_from_parameters
from roma_ros.params import qos_parameters
from roma_ros.srv import ClearTask, SetTask
from rosutil import ros_context, stop_process, wait_until

DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


@pytest.mark.parametrize("depth, history, kept", [(0, HistoryPolicy.KEEP_ALL, None), (7, HistoryPolicy.KEEP_LAST, 7)])
def test_a_qos_depth_of_zero_means_keep_all(depth, history, kept):
    with ros_context() as (context, _executor):
        declared = qos_parameters("qos.x", "reliable", "volatile", depth)
        node = Node("qos_probe", context=context, parameter_overrides=[
            Parameter(name, value=default) for name, (default, _) in declared.items()],
            automatically_declare_parameters_from_overrides=True)
        profile = qos_from_parameters(node, "qos.x")
        assert profile.history == history
        assert profile.reliability == ReliabilityPolicy.RELIABLE
        if kept is not None:
            assert profile.depth == kept
        node.destroy_node()


def test_a_qos_depth_below_zero_is_refused():
    with ros_context() as (context, _executor):
        node = Node("qos_probe", context=context, parameter_overrides=[
            Parameter("qos.x.reliability", value="reliable"), Parameter("qos.x.durability", value="volatile"),
            Parameter("qos.x.depth", value=-1)], automatically_declare_parameters_from_overrides=True)
        with pytest.raises(ValueError, match="depth must be >= 0"):
            qos_from_parameters(node, "qos.x")
        node.destroy_node()


def test_a_burst_of_service_calls_is_answered_in_full(checkpoint):
    engine = start_node("engine", "/burst", f"model_path:={checkpoint}", "max_tasks:=40")
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("caller", context=context)
            executor.add_node(node)
            set_task = node.create_client(SetTask, "/burst/set_task", qos_profile=DEEP)
            clear_task = node.create_client(ClearTask, "/burst/clear_task", qos_profile=DEEP)
            assert wait_until(lambda: set_task.service_is_ready() and clear_task.service_is_ready(), 60, executor), \
                stop_process(engine)

            def burst(calls):
                futures = [(key, call()) for key, call in calls]
                assert wait_until(lambda: all(f.done() for _, f in futures), 60, executor), \
                    ([key for key, f in futures if not f.done()][:20], stop_process(engine)[-2000:])
                return {key: f.result() for key, f in futures}

            set_calls = [(("set", i), lambda i=i: set_task.call_async(SetTask.Request(
                task_id=f"t{i}", instruction=f"alert me when bell {i} rings", mode="alert", threshold=0.5, window=1)))
                for i in range(45)]
            missing = [(("clear_missing", i), lambda i=i: clear_task.call_async(ClearTask.Request(task_id=f"none{i}")))
                       for i in range(45)]
            first = burst([call for pair in zip(set_calls, missing) for call in pair])
            assert len(first) == 90
            accepted = sorted(i for (kind, i), r in first.items() if kind == "set" and r.success)
            refused = [r.message for (kind, _), r in first.items() if kind == "set" and not r.success]
            assert len(accepted) == 40 and len(refused) == 5  # max_tasks
            assert all("max_tasks" in message for message in refused)
            assert not any(r.success for (kind, _), r in first.items() if kind == "clear_missing")

            second = burst([(("clear", i), lambda i=i: clear_task.call_async(ClearTask.Request(task_id=f"t{i}")))
                            for i in accepted])
            assert all(r.success for r in second.values())
    finally:
        stop_process(engine)


def test_many_concurrent_asks_do_not_starve_the_unit_stream(checkpoint):
    """Each ask goal waits for its answer, which comes only after later units are ingested; the
    waiting goals must not hold every executor thread (that deadlocked units until ask_timeout)."""
    n_asks = 10
    engine = start_node("engine", "/asks", f"model_path:={checkpoint}", "max_answer_tokens:=4",
                        "segment_tokens:=4", "max_queries_per_minute:=0", "max_pending_queries:=32",
                        f"max_concurrent_asks:={n_asks}")
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("asker", context=context)
            executor.add_node(node)
            units_pub = node.create_publisher(MultimodalUnit, "/asks/units", DEEP)
            scores: list[SpeakScore] = []
            node.create_subscription(SpeakScore, "/asks/speak_score", scores.append, DEEP)
            ask = ActionClient(node, Ask, "/asks/ask", goal_service_qos_profile=DEEP,
                               result_service_qos_profile=DEEP)
            assert wait_until(lambda: ask.server_is_ready() and units_pub.get_subscription_count() > 0, 60, executor), \
                stop_process(engine)
            goals = [ask.send_goal_async(Ask.Goal(question=f"what do you see, {i}?")) for i in range(n_asks)]
            assert wait_until(lambda: all(g.done() for g in goals), 30, executor), stop_process(engine)[-2000:]
            assert all(g.result().accepted for g in goals)
            one_too_many = ask.send_goal_async(Ask.Goal(question="and now?"))
            assert wait_until(one_too_many.done, 30, executor)
            assert not one_too_many.result().accepted  # max_concurrent_asks
            results = [g.result().get_result_async() for g in goals]
            for unit in make_units(40, seed=3):
                units_pub.publish(unit_to_msg(unit))
                wait_until(lambda: False, 0.1, executor)
                if all(r.done() for r in results):
                    break
            assert wait_until(lambda: all(r.done() for r in results), 30, executor), \
                (sum(r.done() for r in results), len(scores), stop_process(engine)[-2000:])
            assert all(r.result().status == GoalStatus.STATUS_SUCCEEDED for r in results)
            assert len({r.result().result.query_id for r in results}) == n_asks
            assert len(scores) < 40  # the stream was not needed in full: answers came as units arrived
    finally:
        stop_process(engine)
