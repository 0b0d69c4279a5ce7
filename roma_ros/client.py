"""A small Python client for nodes that use roma_ros: alerts, tasks, questions.

    client = RomaClient(node)                       # talks to the engine in namespace /roma
    client.on_alert(lambda alert: print(alert.text))
    client.set_task("fall", "alert me when someone falls", threshold=0.6, window=2)
    future = client.ask("what do you see?", on_partial=print)

Every call has an `_async` form returning an rclpy Future (use these from callbacks of a node
that is already spinning); the plain forms block until done: a node that an executor already spins
(in another thread) stays in that executor, a node nobody spins is spun for the call.
"""
from __future__ import annotations

from typing import Callable

import threading

from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.task import Future
from std_srvs.srv import Trigger

from roma_ros.action import Ask
from roma_ros.msg import Alert, Reply, SpeakScore
from roma_ros.srv import ClearTask, SetTask

# Matches the engine's alert publisher: reliable, and transient-local so a client that starts
# late still receives the most recent alerts.
ALERT_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE,
                       durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
REPLY_QOS = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)


class RomaError(RuntimeError):
    """The engine refused a request or did not answer in time."""


class RomaClient:
    def __init__(self, node: Node, namespace: str = "roma"):
        self.node = node
        self.ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self._set_task = node.create_client(SetTask, f"{self.ns}/set_task")
        self._clear_task = node.create_client(ClearTask, f"{self.ns}/clear_task")
        self._reset = node.create_client(Trigger, f"{self.ns}/reset")
        self._ask = ActionClient(node, Ask, f"{self.ns}/ask")

    # Topics
    def on_alert(self, callback: Callable[[Alert], None]):
        return self.node.create_subscription(Alert, f"{self.ns}/alert", callback, ALERT_QOS)

    def on_reply(self, callback: Callable[[Reply], None]):
        return self.node.create_subscription(Reply, f"{self.ns}/reply", callback, REPLY_QOS)

    def on_speak_score(self, callback: Callable[[SpeakScore], None]):
        return self.node.create_subscription(SpeakScore, f"{self.ns}/speak_score", callback, 10)

    def wait_for_engine(self, timeout: float = 10.0) -> bool:
        """True once the engine's services and action server are reachable."""
        return (self._set_task.wait_for_service(timeout_sec=timeout)
                and self._clear_task.wait_for_service(timeout_sec=timeout)
                and self._reset.wait_for_service(timeout_sec=timeout)
                and self._ask.wait_for_server(timeout_sec=timeout))

    # Services
    def set_task_async(self, task_id: str, instruction: str, mode: str = "alert",
                       threshold: float = 0.5, window: int = 1, cooldown: float = 0.0) -> Future:
        request = SetTask.Request(task_id=task_id, instruction=instruction, mode=mode,
                                  threshold=float(threshold), window=int(window), cooldown=float(cooldown))
        return self._set_task.call_async(request)

    def clear_task_async(self, task_id: str = "") -> Future:
        return self._clear_task.call_async(ClearTask.Request(task_id=task_id))

    def reset_async(self) -> Future:
        return self._reset.call_async(Trigger.Request())

    def set_task(self, task_id: str, instruction: str, mode: str = "alert", threshold: float = 0.5,
                 window: int = 1, cooldown: float = 0.0, timeout: float = 10.0) -> str:
        return self._checked(self._wait(self.set_task_async(task_id, instruction, mode, threshold,
                                                            window, cooldown), timeout))

    def clear_task(self, task_id: str = "", timeout: float = 10.0) -> str:
        return self._checked(self._wait(self.clear_task_async(task_id), timeout))

    def reset(self, timeout: float = 10.0) -> str:
        return self._checked(self._wait(self.reset_async(), timeout))

    # Action
    def ask_async(self, question: str, on_partial: Callable[[str], None] | None = None) -> Future:
        """Future of Ask.Result (query_id, answer); on_partial gets the growing partial answer."""
        done = Future()

        def feedback(msg):
            if on_partial is not None:
                on_partial(msg.feedback.partial)

        def goal_response(goal_future):
            handle = goal_future.result()
            if handle is None or not handle.accepted:
                done.set_exception(RomaError(f"the engine rejected the question {question!r}"))
                return
            handle.get_result_async().add_done_callback(lambda f: done.set_result(f.result().result))

        self._ask.send_goal_async(Ask.Goal(question=question), feedback_callback=feedback) \
            .add_done_callback(goal_response)
        return done

    def ask(self, question: str, on_partial: Callable[[str], None] | None = None,
            timeout: float = 60.0):
        return self._wait(self.ask_async(question, on_partial), timeout)

    def _wait(self, future: Future, timeout: float):
        """Block until `future` is done. A node already added to an executor stays there (the
        caller's callbacks keep running) and that executor delivers the answer; a node that no
        executor spins is spun here by a private executor for the duration of the call."""
        owner = self.node.executor
        if owner is None or self.node not in owner.get_nodes():
            executor = SingleThreadedExecutor(context=self.node.context)
            self.node.executor = executor
            try:
                executor.spin_until_future_complete(future, timeout_sec=timeout)
            finally:
                self.node.executor = None
                executor.shutdown(timeout_sec=0)
        else:
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise RomaError(f"no answer from the engine in {self.ns or '/'} within {timeout} s (the node's "
                                "executor must be spinning in another thread; from its callbacks, use the "
                                "_async calls)")
        if not future.done():
            raise RomaError(f"no answer from the engine in {self.ns or '/'} within {timeout} s")
        return future.result()

    @staticmethod
    def _checked(response) -> str:
        if not response.success:
            raise RomaError(response.message)
        return response.message
