"""`roma record` (media file -> rosbag2) and `roma play` (rosbag2 -> DDS topics, /clock)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from media import write_test_video
from roma_ros.pipeline.typestore import typestore
from rosutil import ros_context, start_python, stop_process, wait_until

ROMA = str(Path(sys.prefix) / "bin" / "roma")
START = 1_000_000_000 * 1_000_000_000  # --start-time 1e9 s


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("media") / "scene.mp4", seconds=3.0)


def read_bag(path):
    store = typestore()
    with Reader(path) as reader:
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_record_writes_sensor_topics_stamped_with_media_time(video, tmp_path, storage):
    bag = tmp_path / "bag"
    result = subprocess.run([ROMA, "record", str(video), "-o", str(bag), "--start-time", "1e9",
                             "--storage", storage], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    messages = read_bag(bag)
    images = [(t, m) for topic, t, m in messages if topic == "/roma/image"]
    audio = [(t, m) for topic, t, m in messages if topic == "/roma/audio"]
    infos = [m for topic, _, m in messages if topic == "/roma/audio_info"]
    assert len(images) == 90
    for i, (log_time, msg) in enumerate(images):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp == log_time  # log time = stamp: replays like a live recording
        assert abs(stamp - (START + round(i / 30 * 1e9))) < 1_000_000
        assert (msg.height, msg.width, msg.encoding, msg.step) == (240, 320, "rgb8", 960)
        red = msg.data.reshape(240, 320, 3)[..., 0].mean()
        assert abs(red - (int(i / 30) * 40)) < 6  # the frame content for its own second
    assert infos and all((m.channels, m.sample_rate, m.sample_format, m.coding_format)
                         == (2, 48000, "S16LE", "wave") for m in infos)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in audio]
    assert stamps == sorted(stamps)
    pcm = np.concatenate([m.audio.data.view("<i2") for _, m in audio]).reshape(-1, 2)
    assert abs(len(pcm) / 48000 - 3.0) < 0.05
    # Consecutive chunks are contiguous: each stamp = previous + its sample count.
    sizes = [len(m.audio.data) // 4 for _, m in audio]
    assert all(abs((b - a) - n * 1e9 / 48000) < 2 for a, b, n in zip(stamps, stamps[1:], sizes))
    assert abs(dominant_frequency(pcm[48000:96000, 0] / 32768.0, 48000) - 440) < 2


def test_record_compressed_and_downscaled(video, tmp_path):
    bag = tmp_path / "bag"
    result = subprocess.run([ROMA, "record", str(video), "-o", str(bag), "--compressed",
                             "--max-pixels", "20000", "--fps", "2", "--image-topic", "/cam/image/compressed"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    images = [m for topic, _, m in read_bag(bag) if topic == "/cam/image/compressed"]
    assert len(images) == 6  # 2 per second over 3 s
    import cv2

    frame = cv2.imdecode(images[3].data, cv2.IMREAD_COLOR)
    assert frame.shape[0] * frame.shape[1] <= 20000
    assert abs(frame[..., 2].mean() - 40) < 8  # second 1 -> red 40 (BGR order after imdecode)


def test_record_refuses_to_overwrite(video, tmp_path):
    (tmp_path / "bag").mkdir()
    result = subprocess.run([ROMA, "record", str(video), "-o", str(tmp_path / "bag")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "exists" in result.stderr


def test_play_publishes_every_message_and_clock(video, tmp_path):
    bag = tmp_path / "bag"
    subprocess.run([ROMA, "record", str(video), "-o", str(bag), "--start-time", "1e9"], check=True,
                   capture_output=True)
    expected = read_bag(bag)
    received = {"image": [], "audio": [], "info": [], "clock": []}
    with ros_context() as (context, executor):
        node = rclpy.create_node("play_test", context=context)
        executor.add_node(node)
        reliable = QoSProfile(depth=500, reliability=QoSReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, "/robot/camera", received["image"].append, reliable)
        node.create_subscription(AudioDataStamped, "/roma/audio", received["audio"].append, reliable)
        node.create_subscription(AudioInfo, "/roma/audio_info", received["info"].append, reliable)
        node.create_subscription(Clock, "/clock", received["clock"].append, 100)
        player = start_python("roma_ros.cli", "play", str(bag), "--rate", "3", "--clock",
                              "--remap", "/roma/image:=/robot/camera",
                              "--wait-for", "/roma/image", "/roma/audio", "/roma/audio_info")
        try:
            assert wait_until(lambda: player.poll() is not None, 60, executor)
            wait_until(lambda: False, 0.5, executor)  # drain what is in flight
        finally:
            output = stop_process(player)
        node.destroy_node()
    assert player.returncode == 0, output
    n_images = sum(1 for topic, _, _ in expected if topic == "/roma/image")
    n_audio = sum(1 for topic, _, _ in expected if topic == "/roma/audio")
    assert len(received["image"]) == n_images
    assert len(received["audio"]) == n_audio
    assert len(received["info"]) >= 1
    bag_images = [m for topic, _, m in expected if topic == "/roma/image"]
    for got, want in zip(received["image"], bag_images):
        assert got.header.stamp.sec == want.header.stamp.sec
        assert got.header.stamp.nanosec == want.header.stamp.nanosec
        assert bytes(got.data) == want.data.tobytes()
    clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in received["clock"]]
    assert clock and 1e9 <= min(clock) and max(clock) <= 1e9 + 3.1
    assert clock == sorted(clock)
