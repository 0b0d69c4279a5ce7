"""engine_node's lifecycle: configure loads the model, activate subscribes, cleanup frees it.
Transitions are requested through the standard lifecycle services, as a lifecycle manager would."""
import gc
import threading
import weakref

import pytest
import rclpy
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from roma_ros.nodes.engine_node import EngineNode
from reliability import Diagnostics, start_node
from rosutil import stop_process, wait_until


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


@pytest.fixture
def running(checkpoint):
    """An engine node (autostart off) spun by a background executor, plus a client node."""
    context = rclpy.Context()
    rclpy.init(context=context)
    engine = EngineNode(context=context, namespace="lc", parameter_overrides=[
        Parameter("autostart", value=False), Parameter("model_path", value=str(checkpoint))])
    client = rclpy.create_node("lifecycle_manager", context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(engine)
    executor.add_node(client)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield engine, client
    executor.shutdown()
    engine.destroy_node()
    client.destroy_node()
    rclpy.shutdown(context=context)
    thread.join(timeout=5)


def call(client, srv_type, name, request, timeout=60.0):
    cli = client.create_client(srv_type, name)
    assert cli.wait_for_service(timeout_sec=20)
    future = cli.call_async(request)
    assert wait_until(future.done, timeout)
    client.destroy_client(cli)
    return future.result()


def transition(client, transition_id):
    return call(client, ChangeState, "/lc/engine/change_state",
                ChangeState.Request(transition=Transition(id=transition_id))).success


def state(client):
    return call(client, GetState, "/lc/engine/get_state", GetState.Request()).current_state.id


def services(node):
    return {name for name, _ in node.get_service_names_and_types()}


def test_transitions_load_subscribe_and_release(running):
    engine, client = running
    assert state(client) == State.PRIMARY_STATE_UNCONFIGURED
    assert engine.session is None
    assert "/lc/set_task" not in services(client)

    assert transition(client, Transition.TRANSITION_CONFIGURE)
    assert state(client) == State.PRIMARY_STATE_INACTIVE
    assert engine.session is not None
    assert wait_until(lambda: {"/lc/set_task", "/lc/clear_task", "/lc/reset"} <= services(client), 10)
    assert client.count_subscribers("/lc/units") == 0  # not yet: subscriptions start on activate
    model_ref = weakref.ref(engine.session.model)

    assert transition(client, Transition.TRANSITION_ACTIVATE)
    assert state(client) == State.PRIMARY_STATE_ACTIVE
    assert wait_until(lambda: client.count_subscribers("/lc/units") == 1, 10)
    assert client.count_subscribers("/lc/query") == 1

    assert transition(client, Transition.TRANSITION_DEACTIVATE)
    assert wait_until(lambda: client.count_subscribers("/lc/units") == 0, 10)
    assert engine.session is not None  # the model stays loaded while inactive

    assert transition(client, Transition.TRANSITION_CLEANUP)
    assert state(client) == State.PRIMARY_STATE_UNCONFIGURED
    assert engine.session is None
    gc.collect()
    assert model_ref() is None, "cleanup must release the model"
    assert wait_until(lambda: "/lc/set_task" not in services(client), 10)

    # Configure again works (the model is reloaded).
    assert transition(client, Transition.TRANSITION_CONFIGURE)
    assert engine.session is not None


def test_a_bad_checkpoint_fails_configure_and_the_node_survives(running, tmp_path):
    """autostart off: the node stays up, unconfigured, and /diagnostics says ERROR with the reason."""
    engine, client = running
    diag = Diagnostics(client)
    engine.set_parameters([Parameter("model_path", value=str(tmp_path / "missing"))])
    assert not transition(client, Transition.TRANSITION_CONFIGURE)
    assert state(client) == State.PRIMARY_STATE_UNCONFIGURED
    assert engine.session is None
    name = "lc/engine: engine"
    assert wait_until(lambda: "missing" in diag.latest.get(name, {}).get("_message", ""), 30), diag.latest
    assert diag.latest[name]["_level"] == "2"
    assert diag.latest[name]["_message"].startswith("model not loaded: ")


def test_with_autostart_a_model_that_fails_to_load_ends_the_process_with_the_reason(tmp_path):
    """So that launch reports the exit and `respawn` can act."""
    proc = start_node("engine", "/lcfail", f"model_path:={tmp_path / 'missing'}")
    try:
        returncode = proc.wait(timeout=120)
    finally:
        output = stop_process(proc)
    assert returncode == 1, output[-2000:]
    reason = [line for line in output.splitlines() if line.startswith("engine_node: model failed to load: ")]
    assert len(reason) == 1 and "missing" in reason[0], output[-2000:]
    assert "Traceback" not in output


def test_nodes_do_not_shadow_rclpy_node_internals():
    # Assigning e.g. self._services in a Node subclass silently removes the node's services
    # (lifecycle ones included) from the executor; this happened once.
    import inspect
    import re

    from rclpy.lifecycle import LifecycleNode

    import roma_ros.nodes.diagnostics
    import roma_ros.nodes.engine_node
    import roma_ros.nodes.synchronizer_node

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        probe = LifecycleNode("probe", context=context)
        internal = set(vars(probe)) | set(dir(LifecycleNode))
        probe.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    for module in (roma_ros.nodes.engine_node, roma_ros.nodes.synchronizer_node):
        assigned = set(re.findall(r"self\.(_[A-Za-z_]+)\s*=", inspect.getsource(module)))
        assert not assigned & internal, (module.__name__, assigned & internal)
