"""engine_node: ROMA on the `units` stream; alerts, replies, speak scores, tasks and questions.

A lifecycle node: configure loads the model, activate subscribes to `units` and `query`,
deactivate unsubscribes, cleanup releases the model. With `autostart` (default) it configures
and activates itself, so `ros2 run` and plain launch files need no lifecycle manager.

Inference runs on one worker thread fed by a bounded queue, never on the executor, so services,
the ask action and DDS callbacks stay responsive while a unit is processed. When the engine falls
behind real time, `overload_policy` decides: `skip` (default) drops the oldest waiting unit and
counts it; `block` makes the units callback wait (DDS history then absorbs or drops).
"""
from __future__ import annotations

import gc
import queue
import sys
import threading
import time
import uuid

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_srvs.srv import Trigger

from roma_ros.action import Ask
from roma_ros.core.log_text import loggable
from roma_ros.core.sliding_window import SlidingWindow
from roma_ros.core.unit import Unit, unit_problem
from roma_ros.dds import apply_dds_defaults
from roma_ros.engine.interface import UnitRefused
from roma_ros.engine.session import QueryRejected, SessionStep, StreamSession
from roma_ros.memory import map_large_buffers, return_freed_heap
from roma_ros.msg import Alert, MultimodalUnit, Query, Reply, SpeakScore
from roma_ros.nodes.diagnostics import ERROR, OK, STALE, WARN, DiagnosticsReporter
from roma_ros.nodes.process import (SHUTDOWN_EXCEPTIONS, RCLError, exit_now, is_shutdown_race, quiet_cleanup,
                                    spin_until_shutdown)
from roma_ros.nodes.qos import incompatible_qos_events, qos_from_parameters
from roma_ros.pipeline.convert import ns_to_time, stamp_to_ns, unit_from_msg
from roma_ros.pipeline.engine import PARAMETERS, AlertLog, build_session
from roma_ros.pipeline.watchdog import Watchdog
from roma_ros.srv import ClearTask, SetTask

_STOP = object()


def guarded_service(node: "EngineNode", name: str, callback):
    """A service callback that answers `success=False` instead of raising: an exception escaping
    a callback would stop the executor and with it the node."""
    def call(request, response):
        try:
            return callback(request, response)
        except Exception as exc:  # noqa: BLE001 - reported to the caller and in diagnostics
            node.diagnostics.error("service_failed", f"{name}: {type(exc).__name__}: {exc}")
            response.success, response.message = False, f"{name} failed: {type(exc).__name__}: {exc}"
            return response
    return call


class _AskWaiter:
    def __init__(self, goal_handle):
        self.goal_handle = goal_handle
        self.parts: list[str] = []
        self.done = threading.Event()
        self.failed = ""
        self.cancelled = False


class EngineNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("engine", **kwargs)
        for name, (default, _description) in PARAMETERS.items():
            self.declare_parameter(name, default)
        self.session: StreamSession | None = None
        self._model_lock = threading.Lock()
        self._units: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._input_subscriptions = []
        self._waiters: dict[str, _AskWaiter] = {}
        # Goals whose cancel arrived before their execution began (a busy executor): it must not
        # then wait ask_timeout for an answer nobody wants.
        self._cancelled_early: set[bytes] = set()
        self._waiters_lock = threading.Lock()
        self._watchdog = Watchdog()
        self._last_step: SessionStep | None = None
        self._alert_log: AlertLog | None = None
        self._accepted_queries = SlidingWindow(60.0)  # for max_queries_per_minute
        self._ask_group = ReentrantCallbackGroup()
        self._asks_running = 0
        self._asks_lock = threading.Lock()
        self._units_group = MutuallyExclusiveCallbackGroup()  # may block (overload_policy=block)
        self._active = False
        self._last_unit_index: int | None = None  # of the last unit received (gap detection)
        self.configure_error = ""  # why the last configure failed ("" = it did not)
        self.diagnostics = DiagnosticsReporter(self, "engine", status=self._status,
                                               period=float(self._param("diagnostics_period")))
        if self._param("autostart"):
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    def _param(self, name: str):
        return self.get_parameter(name).value

    # Lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._param
        self.get_logger().info(f"loading model {p('model_path')} ({p('backend')}, {p('device')}, {p('dtype')}, "
                               f"profile {p('model_profile')})")
        try:
            started = time.monotonic()
            self.session = build_session(p)
        except Exception as exc:  # a bad checkpoint or setting must not kill the process
            self.configure_error = loggable(f"{type(exc).__name__}: {exc}", 500)
            self.get_logger().error(f"configure failed: {self.configure_error}")
            self.session = None
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        config = self.session.model.config if hasattr(self.session.model, "config") else None
        path = config.model_path if config is not None else p("model_path")
        self.get_logger().info(f"model {path} ({p('backend')}, {p('device')}, {p('dtype')}) "
                               f"loaded in {time.monotonic() - started:.1f} s")
        model_profile = getattr(self.session.model, "model_profile", None)
        if model_profile is not None:
            for warning in model_profile.warnings:
                self.get_logger().warning(warning)
            self.get_logger().info(model_profile.describe())
            self.diagnostics.set("model_profile", model_profile.name)
            self.diagnostics.set("prompt_source", model_profile.prompt_source)
            self.diagnostics.set("model_profile_warnings", " | ".join(model_profile.warnings) or "none")
        self.diagnostics.set("speak_head", getattr(self.session.model, "speak_head_source", "checkpoint"))
        if p("alert_log"):
            self._alert_log = AlertLog(str(p("alert_log")))
        self._alert_pub, self._reply_pub, self._score_pub = (
            self.create_lifecycle_publisher(
                msg_type, str(p(f"topics.{name}")), qos_from_parameters(self, f"qos.{name}"),
                event_callbacks=incompatible_qos_events(self.diagnostics, str(p(f"topics.{name}")), publisher=True))
            for msg_type, name in ((Alert, "alert"), (Reply, "reply"), (SpeakScore, "speak_score")))
        # Service callbacks wait for the model while a unit is ingested; with the ROS default
        # (keep last 10) a burst of requests would silently lose all but the last ten.
        services_qos = qos_from_parameters(self, "qos.services")
        # One group per service, so a stream of set_task calls cannot starve clear_task or reset.
        self._roma_services = [
            self.create_service(srv_type, name, guarded_service(self, name, callback), qos_profile=services_qos,
                                callback_group=MutuallyExclusiveCallbackGroup())
            for srv_type, name, callback in ((SetTask, "set_task", self._on_set_task),
                                             (ClearTask, "clear_task", self._on_clear_task),
                                             (Trigger, "reset", self._on_reset))
        ]
        self._ask_server = ActionServer(self, Ask, "ask", execute_callback=self._execute_ask,
                                        goal_callback=self._on_ask_goal,
                                        cancel_callback=self._on_ask_cancel,
                                        goal_service_qos_profile=services_qos,
                                        result_service_qos_profile=services_qos,
                                        cancel_service_qos_profile=services_qos,
                                        callback_group=self._ask_group)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._units = queue.Queue(maxsize=max(1, int(self._param("queue_size"))))
        self._worker = threading.Thread(target=self._work, name="roma_engine", daemon=True)
        self._worker.start()
        units_topic, query_topic = str(self._param("topics.units")), str(self._param("topics.query"))
        self._input_subscriptions = [
            self.create_subscription(MultimodalUnit, units_topic, self._on_unit,
                                     qos_from_parameters(self, "qos.units"),
                                     callback_group=self._units_group,
                                     event_callbacks=incompatible_qos_events(self.diagnostics, units_topic)),
            self.create_subscription(Query, query_topic, self._on_query, qos_from_parameters(self, "qos.query"),
                                     event_callbacks=incompatible_qos_events(self.diagnostics, query_topic)),
        ]
        self._active = True
        self._watchdog.idle()
        self._last_unit_index = None
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._input_subscriptions:
            self.destroy_subscription(sub)
        self._input_subscriptions = []
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._input_subscriptions:
            self.destroy_subscription(sub)
        self._input_subscriptions = []
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self, wait: float = 30.0, why: str = "the engine was deactivated") -> None:
        """Stop the worker: units still queued are dropped (counted), never waited for; the unit
        in progress gets `wait` seconds to finish."""
        if self._worker is not None:
            while True:
                try:
                    if self._units.get_nowait() is not _STOP:
                        self.diagnostics.count("units_dropped")
                except queue.Empty:
                    break
            self._units.put_nowait(_STOP)
            self._worker.join(timeout=wait)
            self._worker = None
        self._fail_waiters(why)

    def stop_for_exit(self, grace: float = 1.0) -> None:
        """The process is ending (SIGINT/SIGTERM): stop taking units and give the unit in
        progress at most `grace` seconds, whatever the model's size."""
        self._active = False
        self._stop_worker(wait=grace, why="the engine is shutting down")

    def _release(self) -> None:
        """Drop the model and everything that refers to it, so its memory is returned."""
        for service in getattr(self, "_roma_services", []):
            self.destroy_service(service)
        self._roma_services = []
        if getattr(self, "_ask_server", None) is not None:
            self._ask_server.destroy()
            self._ask_server = None
        for name in ("_alert_pub", "_reply_pub", "_score_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_lifecycle_publisher(getattr(self, name))
                setattr(self, name, None)
        if self._alert_log is not None:
            self._alert_log.close()
            self._alert_log = None
        with self._model_lock:
            self.session = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        return_freed_heap()

    # Units
    def _on_unit(self, msg: MultimodalUnit) -> None:
        # Malformed units are refused at the door: they never take a queue slot from a real unit
        # and their index (untrustworthy) never counts as a gap in the stream.
        self.diagnostics.count("units_in")
        try:
            unit = unit_from_msg(msg)
        except Exception as exc:  # a malformed unit is reported, never fatal
            self.diagnostics.error("bad_unit", f"unit {msg.index}: {exc}")
            return
        problem = unit_problem(unit)
        if problem is not None:
            self.diagnostics.error(*problem)
            return
        self._note_unit_index(unit.index)
        if self._units.empty():  # the worker was idle, not stuck
            self._watchdog.idle()
        if self._param("overload_policy") == "block":
            self._units.put(unit)
            return
        while True:
            try:
                self._units.put_nowait(unit)
                return
            except queue.Full:
                try:
                    self._units.get_nowait()
                    self.diagnostics.count("units_dropped")
                except queue.Empty:
                    pass

    def _note_unit_index(self, index: int) -> None:
        """Units lost between the synchronizer and here (DDS under load) are counted, never silent.
        A lower index means the synchronizer started over."""
        last, self._last_unit_index = self._last_unit_index, index
        if last is not None and index > last + 1:
            self.diagnostics.count("units_lost", index - last - 1)
            self.diagnostics.error("units_missed", f"units {last + 1}..{index - 1} never arrived "
                                                   f"({index - last - 1} units)")

    def _work(self) -> None:
        while True:
            if self._units.empty():
                self._watchdog.idle()
            unit = self._units.get()
            if unit is _STOP:
                return
            self._watchdog.started()
            try:
                self._process(unit)
            except Exception as exc:  # the worker must outlive any unit: count it and go on
                self.diagnostics.error("worker", f"unit {unit.index}: {type(exc).__name__}: {exc}")
            finally:
                self._watchdog.finished()

    def _process(self, unit: Unit) -> None:
        started = time.perf_counter()
        try:
            with self._model_lock:
                if self.session is None:
                    return
                try:
                    step = self.session.process(unit)
                finally:
                    expired = self.session.take_expired()
        except UnitRefused as exc:
            self.diagnostics.error(exc.reason, str(exc))
            self._expire(expired)
            if exc.restarted:
                self._fail_waiters("the context was restarted: it held non-finite state")
            return
        except Exception as exc:
            self.diagnostics.error("inference", f"unit {unit.index}: {type(exc).__name__}: {exc}")
            self._expire(expired)
            return
        self._expire(expired)
        latency_ms = (time.perf_counter() - started) * 1000
        if step.result is not None:
            for reason, message in step.result.input_notes:
                self.diagnostics.error(reason, f"unit {unit.index}: {message}")
        self._watchdog.record_latency(latency_ms)
        self._last_step = step
        self.diagnostics.count("units_processed")
        self.diagnostics.set("last_latency_ms", round(latency_ms, 1))
        self.diagnostics.set("real_time_factor", round(latency_ms / 1000 / (unit.duration_ns / 1e9), 3))
        self._publish(step, unit.frame_id)

    def _publish(self, step: SessionStep, frame_id: str) -> None:
        """Every output carries the stamp of the stream time it speaks for and the camera's
        frame_id of the unit that produced it."""
        score = SpeakScore(unit_index=step.unit_index, probability=float(step.probability),
                           fired_task_ids=[t.task_id for t in step.triggers])
        score.header.stamp = ns_to_time(step.end_ns)
        score.header.frame_id = frame_id
        self._safe_publish(self._score_pub, score)
        for event in step.alerts:
            alert = Alert(task_id=event.task_id, instruction=event.instruction, text=event.text,
                          probability=float(event.probability), unit_index=event.unit_index,
                          window_start=ns_to_time(event.window_start_ns), mode=event.mode)
            alert.header.stamp = ns_to_time(event.time_ns)
            alert.header.frame_id = frame_id
            if self._alert_log is not None:
                self._alert_log.write(event)
            self._safe_publish(self._alert_pub, alert)
            self.diagnostics.count("alerts")
            self.get_logger().info(
                f"ALERT [{loggable(event.task_id)}] p={event.probability:.2f} at unit {event.unit_index}, "
                f"window {event.window_start_ns / 1e9:.2f}-{event.time_ns / 1e9:.2f} s: {loggable(event.text, 300)}")
        for stamped in step.chunks:
            chunk = stamped.chunk
            reply = Reply(query_id=chunk.query_id, text=chunk.text, final=chunk.final,
                          unit_index=max(0, chunk.unit_index))
            reply.header.stamp = ns_to_time(stamped.time_ns)
            reply.header.frame_id = frame_id
            self._safe_publish(self._reply_pub, reply)
            self.diagnostics.count("reply_chunks")
            waiter = self._waiters.get(chunk.query_id)
            if waiter is not None:
                waiter.parts.append(chunk.text)
                waiter.goal_handle.publish_feedback(Ask.Feedback(partial="".join(waiter.parts)))
                if chunk.final:
                    waiter.done.set()

    def _safe_publish(self, publisher, msg) -> None:
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except Exception as exc:  # RCLError under load must not stop the worker
            self.diagnostics.error("publish", f"{type(msg).__name__}: {exc}")

    def _expire(self, query_ids: list[str]) -> None:
        for query_id in query_ids:
            self.diagnostics.error("query_expired", f"question {query_id!r} expired: stamped more than "
                                                    f"{self._param('max_query_lead')} s ahead of the stream")
            waiter = self._waiters.get(query_id)
            if waiter is not None:
                waiter.failed = "the question expired: stamped too far ahead of the stream"
                waiter.done.set()

    # Questions
    def _on_query(self, msg: Query) -> None:
        self._ask(msg.text, msg.id, stamp_to_ns(msg.header.stamp))

    def _query_rate_ok(self) -> bool:
        """True if one more question fits max_queries_per_minute (sliding 60 s window)."""
        limit = int(self._param("max_queries_per_minute"))
        return limit <= 0 or self._accepted_queries.count() < limit

    def _ask(self, text: str, query_id: str, stamp_ns: int, engine_id: bool = False) -> str | None:
        with self._model_lock:
            if self.session is None:
                return None
            stripped = text.strip()
            if stripped and len(stripped) <= self.session.max_query_chars and not self._query_rate_ok():
                self.diagnostics.error("query_rate_limited",
                                       f"more than {self._param('max_queries_per_minute')} questions in a "
                                       f"minute (parameter max_queries_per_minute): {query_id or 'ask'} refused")
                return None
            try:
                query_id = self.session.ask(text, query_id, stamp_ns, engine_id=engine_id)
            except QueryRejected as exc:
                self.diagnostics.error("query_rejected", str(exc))
                return None
            self._accepted_queries.record()
            return query_id

    @property
    def executor_threads(self) -> int:
        """Threads a MultiThreadedExecutor needs for this node: the unit subscription, the
        default group (query, timers, lifecycle), one per service, the action's own services,
        and one per ask goal waiting for its answer (those block until the answer is final)."""
        return 6 + self._max_asks

    @property
    def _max_asks(self) -> int:
        return max(1, int(self._param("max_concurrent_asks")))

    def _on_ask_goal(self, goal: Ask.Goal) -> GoalResponse:
        question = goal.question.strip()
        if not self._active or self.session is None:
            self.diagnostics.error("ask_rejected", "rejected an ask goal: the engine is not active")
            return GoalResponse.REJECT
        if not question or len(question) > int(self._param("max_query_chars")):
            self.diagnostics.error("ask_rejected", f"rejected ask goal of {len(goal.question)} characters")
            return GoalResponse.REJECT
        with self._asks_lock:
            if self._asks_running >= self._max_asks:
                self.diagnostics.error("ask_busy", f"rejected an ask goal: {self._asks_running} are being "
                                                   f"answered (parameter max_concurrent_asks)")
                return GoalResponse.REJECT
            self._asks_running += 1  # released when its execution ends
        return GoalResponse.ACCEPT

    def _execute_ask(self, goal_handle) -> Ask.Result:
        try:
            return self._answer_ask(goal_handle)
        finally:
            with self._asks_lock:
                self._asks_running -= 1

    def _answer_ask(self, goal_handle) -> Ask.Result:
        waiter = _AskWaiter(goal_handle)
        # Not derivable from outside, and in the engine's own namespace: no Query can take it.
        query_id = f"ask/{uuid.uuid4().hex}"
        with self._waiters_lock:
            self._waiters[query_id] = waiter  # before the question can be answered
            if _goal_key(goal_handle) in self._cancelled_early:
                self._cancelled_early.discard(_goal_key(goal_handle))
                waiter.cancelled = True
                waiter.done.set()
        if waiter.cancelled:
            self._waiters.pop(query_id, None)
            _await_cancel_state(goal_handle)
            self.diagnostics.count("asks_cancelled")
            goal_handle.canceled()
            return Ask.Result()
        if self._ask(goal_handle.request.question, query_id, 0, engine_id=True) is None:
            self._waiters.pop(query_id, None)
            goal_handle.abort()
            return Ask.Result()
        try:
            finished = waiter.done.wait(float(self._param("ask_timeout")))
            answer = "".join(waiter.parts)
            if waiter.cancelled or goal_handle.is_cancel_requested:
                _await_cancel_state(goal_handle)
                with self._model_lock:
                    if self.session is not None:
                        self.session.withdraw(query_id)
                self.diagnostics.count("asks_cancelled")
                goal_handle.canceled()
            elif finished and not waiter.failed:
                goal_handle.succeed()
            else:
                self.diagnostics.error("ask_failed", waiter.failed or f"no final answer to {query_id} in time")
                goal_handle.abort()
            return Ask.Result(query_id=query_id, answer=answer)
        finally:
            self._waiters.pop(query_id, None)

    def _on_ask_cancel(self, goal_handle) -> CancelResponse:
        """Accept at once and wake the goal's execution, which ends it and frees its slot (or, if it
        has not begun yet, ends it as soon as it begins)."""
        with self._waiters_lock:
            for waiter in self._waiters.values():
                if _goal_key(waiter.goal_handle) == _goal_key(goal_handle):
                    waiter.cancelled = True
                    waiter.done.set()
                    break
            else:
                self._cancelled_early.add(_goal_key(goal_handle))
        return CancelResponse.ACCEPT

    def _fail_waiters(self, reason: str) -> None:
        for waiter in list(self._waiters.values()):
            waiter.failed = reason
            waiter.done.set()

    # Services
    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        with self._model_lock:
            if self.session is None:
                response.success, response.message = False, "the engine is not configured"
                return response
            try:
                self.session.set_task(request.task_id, request.instruction, request.mode,
                                      request.threshold, request.window, request.cooldown)
            except ValueError as exc:
                self.diagnostics.error("bad_task", str(exc))
                response.success, response.message = False, str(exc)
                return response
        response.success, response.message = True, f"task {request.task_id!r} set"
        return response

    def _on_clear_task(self, request: ClearTask.Request, response: ClearTask.Response) -> ClearTask.Response:
        with self._model_lock:
            if self.session is None:
                response.success, response.message = False, "the engine is not configured"
                return response
            removed = self.session.clear_task(request.task_id)
        what = f"task {request.task_id!r}" if request.task_id else "all tasks"
        response.success = removed or not request.task_id
        response.message = f"cleared {what}" if removed else f"no such task: {request.task_id!r}"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._model_lock:
            if self.session is None:
                response.success, response.message = False, "the engine is not configured"
                return response
            self.session.reset()
        self._fail_waiters("the context was reset")
        response.success, response.message = True, "context reset"
        return response

    # Diagnostics
    def _stall(self) -> str:
        """Why units are not being processed although they arrive, or "" (the watchdog)."""
        if not self._active:
            return ""
        if self._worker is None or not self._worker.is_alive():
            return "the inference worker is not running: units are not processed"
        return self._watchdog.stall(float(self._param("stall_timeout")),
                                    self._units.qsize() if self._units is not None else 0)

    def _status(self, diag: DiagnosticsReporter):
        depth = self._units.qsize() if self._units is not None else 0
        diag.set("queue_depth", depth)
        median = self._watchdog.median_latency_ms
        if median is not None:
            diag.set("median_latency_ms", round(median, 1))
        step = self._last_step
        if step is not None and step.result is not None:
            diag.set("context_tokens", step.result.context_tokens)
            diag.set("max_position", step.result.max_position)
        if self.session is not None:
            diag.set("tasks", len(self.session.tasks))
            diag.set("pending_queries", self.session.pending_queries)
            diag.set("responses_skipped_busy", self.session.busy_skips)
        if self.session is None:
            if self.configure_error:
                return ERROR, f"model not loaded: {self.configure_error}"
            return ERROR, "model not loaded"
        if stalled := self._stall():
            return ERROR, stalled
        if step is None:
            return STALE, "no units yet"
        if diag.new_errors():
            return WARN, f"{diag.new_errors()} errors"
        if median is not None and median > 1000 * (step.end_ns - step.start_ns) / 1e9:
            return WARN, "slower than real time: units are being skipped"
        return OK, "ok"


def _goal_key(goal_handle) -> bytes:
    return bytes(goal_handle.goal_id.uuid)


def _await_cancel_state(goal_handle, timeout: float = 5.0) -> None:
    """The action server marks a goal as canceling just after the cancel callback returns; the
    woken execution waits for that before it may report the goal canceled."""
    deadline = time.monotonic() + timeout
    while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
        time.sleep(0.002)


EXIT_BUDGET_S = 1.2  # seconds from the end of spinning to the process's exit


def main(args=None) -> int:
    apply_dds_defaults()
    map_large_buffers()
    rclpy.init(args=args)
    code = 0
    node = None
    executor = None
    try:
        node = EngineNode()
        if node.configure_error and node._param("autostart"):
            # Exit non-zero so that launch shows the reason and `respawn` can act; with autostart
            # off the node stays up, unconfigured, and reports the reason on /diagnostics.
            print(f"engine_node: model failed to load: {node.configure_error}", file=sys.stderr)
            code = 1
        else:
            executor = MultiThreadedExecutor(num_threads=node.executor_threads)
            executor.add_node(node)
            spin_until_shutdown(executor)
    except (*SHUTDOWN_EXCEPTIONS, RCLError) as exc:  # e.g. SIGINT while the model loads
        if not is_shutdown_race(exc, rclpy.get_default_context()):
            raise
    finally:
        # one budget for the whole exit, whatever the model's size: the unit in progress gets part
        # of it, the executor's threads what is left (launch sends SIGTERM after 5 s)
        deadline = time.monotonic() + EXIT_BUDGET_S
        steps = []
        if node is not None:
            steps += [lambda: node.stop_for_exit(grace=EXIT_BUDGET_S * 0.6), node.destroy_node]
        if executor is not None:
            steps.append(lambda: executor.shutdown(timeout_sec=max(0.05, deadline - time.monotonic())))
        quiet_cleanup(*steps, rclpy.try_shutdown)
    exit_now(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
