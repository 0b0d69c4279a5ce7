"""RomaClient against a real engine_node: blocking calls keep the caller's node in its executor."""
from __future__ import annotations

import threading

import pytest
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String

from reliability import start_node
from roma_ros.client import RomaClient, RomaError
from rosutil import ros_context, stop_process, wait_until


@pytest.fixture(scope="module")
def engine():
    proc = start_node("engine", "/clienttest", "model_path:=embedded")
    yield proc
    stop_process(proc)


def test_blocking_set_task_keeps_the_callers_callbacks_running(engine):
    with ros_context() as (context, _):
        node = __import__("rclpy").create_node("client_user", context=context)
        executor = MultiThreadedExecutor(num_threads=2, context=context)
        executor.add_node(node)
        heard = []
        node.create_subscription(String, "/clienttest/chatter", lambda m: heard.append(m.data), 10)
        pub = node.create_publisher(String, "/clienttest/chatter", 10)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            client = RomaClient(node, "clienttest")
            assert client.wait_for_engine(timeout=120)
            assert "fall" in client.set_task("fall", "Alert me when a cat appears.", timeout=60)
            assert node.executor is executor  # still in the caller's executor
            n = len(heard)
            pub.publish(String(data="after"))
            assert wait_until(lambda: len(heard) > n, 30), "the caller's callbacks stopped"
            with pytest.raises(RomaError):
                client.set_task("", "an empty id is refused", timeout=60)
            assert client.clear_task("fall", timeout=60)
        finally:
            executor.shutdown(timeout_sec=5)
            node.destroy_node()


def test_blocking_calls_spin_a_node_nobody_spins(engine):
    with ros_context() as (context, _):
        node = __import__("rclpy").create_node("client_script", context=context)
        try:
            client = RomaClient(node, "clienttest")
            assert client.wait_for_engine(timeout=120)
            client.set_task("cat", "Alert me when a cat appears.", timeout=60)
            assert node.executor is None  # the private executor let it go again
            client.clear_task("cat", timeout=60)
        finally:
            node.destroy_node()
