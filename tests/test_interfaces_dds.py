"""Every roma_ros message type crosses a process boundary over real DDS unchanged."""
from pathlib import Path

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration, Time
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from roma_ros.msg import Alert, MultimodalUnit, Query, Reply, SpeakScore
from rosutil import ros_context, start_python, stop_process, wait_until

QOS = QoSProfile(
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


def sample_messages():
    rng = np.random.default_rng(7)
    frames = []
    for i in range(2):
        img = Image(height=168, width=336, encoding="rgb8", step=336 * 3)
        img.header.stamp = Time(sec=100, nanosec=250_000_000 + i * 500_000_000)
        img.header.frame_id = "camera_optical_frame"
        img.data = rng.integers(0, 256, 168 * 336 * 3, dtype=np.uint8).tobytes()
        frames.append(img)
    unit = MultimodalUnit(
        index=42,
        duration=Duration(sec=1),
        frames=frames,
        sample_rate=16000,
        audio_coverage=0.75,
        repeated_frames=1,
        stream_restart=True,
    )
    unit.header.stamp = Time(sec=100, nanosec=0)
    unit.header.frame_id = "camera_optical_frame"
    unit.audio = rng.uniform(-1, 1, 16000).astype(np.float32).tolist()
    alert = Alert(
        task_id="fall",
        instruction="alert me when someone falls",
        text="A person fell near the door.",
        probability=0.875,
        unit_index=42,
        window_start=Time(sec=96),
        mode="alert",
    )
    alert.header.stamp = Time(sec=101)
    reply = Reply(query_id="q-1", text="I see a cat.", final=True, unit_index=43)
    reply.header.stamp = Time(sec=102)
    query = Query(id="q-1", text="What do you see?")
    query.header.stamp = Time(sec=100, nanosec=500_000_000)
    score = SpeakScore(unit_index=42, probability=0.125, fired_task_ids=["fall", "door"])
    score.header.stamp = Time(sec=101)
    return {"unit": unit, "alert": alert, "reply": reply, "query": query, "score": score}


def test_every_message_type_round_trips_through_another_process():
    echo = start_python("interface_echo", env={"PYTHONPATH": str(Path(__file__).parent)})
    try:
        assert echo.stdout.readline().strip() == "READY"
        sent = sample_messages()
        received = {}
        with ros_context() as (context, executor):
            node = rclpy.create_node("interface_test", context=context)
            executor.add_node(node)
            pubs = {}
            for name, msg in sent.items():
                pubs[name] = node.create_publisher(type(msg), f"{name}_in", QOS)
                node.create_subscription(
                    type(msg), f"{name}_out", lambda m, n=name: received.setdefault(n, m), QOS
                )
            # Discovery: wait until the echo process matched every publisher and subscription.
            assert wait_until(
                lambda: all(
                    p.get_subscription_count() > 0 and node.count_publishers(f"{n}_out") > 0
                    for n, p in pubs.items()
                ),
                timeout=15,
                executor=executor,
            ), "echo process not discovered"
            for name, msg in sent.items():
                pubs[name].publish(msg)
            assert wait_until(lambda: len(received) == len(sent), 15, executor), received.keys()
            node.destroy_node()
        for name, msg in sent.items():
            assert received[name] == msg, name
        assert np.frombuffer(bytes(received["unit"].frames[1].data), np.uint8).size == 168 * 336 * 3
        assert received["unit"].audio.typecode == "f"  # float32[] arrives as array.array
    finally:
        output = stop_process(echo)
    assert "Traceback" not in output, output


@pytest.mark.parametrize("msg_type", [MultimodalUnit, Alert, Reply, Query, SpeakScore])
def test_messages_have_documented_fields(msg_type):
    # The interface table in the README documents these; a rename must update both.
    fields = set(msg_type.get_fields_and_field_types())
    assert "header" in fields
    expected = {
        MultimodalUnit: {"index", "duration", "frames", "audio", "sample_rate", "audio_coverage",
                         "repeated_frames", "stream_restart"},
        Alert: {"task_id", "instruction", "text", "probability", "unit_index", "window_start", "mode"},
        Reply: {"query_id", "text", "final", "unit_index"},
        Query: {"id", "text"},
        SpeakScore: {"unit_index", "probability", "fired_task_ids"},
    }[msg_type]
    assert expected <= fields
