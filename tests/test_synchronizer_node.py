"""synchronizer_node: message conversion, bad input handling through the node's own code path,
and an integration test with real publisher processes over DDS."""
from __future__ import annotations

import array
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from roma_ros.core.assembler import AssemblerConfig
from roma_ros.core.audio_decode import AudioFormat
from roma_ros.core.unit import Unit
from roma_ros.msg import MultimodalUnit
from roma_ros.pipeline.convert import ns_to_time, unit_from_msg, unit_to_msg
from roma_ros.pipeline.synchronizer import SynchronizerPipeline
from rosutil import ros_context, start_python, stop_process, wait_until
from sensor_publishers import TONE_AMPLITUDE, TONE_HZ, frame_colour

REPO = Path(__file__).resolve().parent.parent
S = 1_000_000_000


def test_unit_message_round_trip():
    rng = np.random.default_rng(0)
    unit = Unit(
        index=7, start_ns=1234 * S, duration_ns=S,
        frames=[rng.integers(0, 256, (196, 280, 3), dtype=np.uint8) for _ in range(2)],
        audio=rng.uniform(-1, 1, 16000).astype(np.float32), frame_stamps_ns=[1234 * S + 5, 1234 * S + 7],
        audio_coverage=0.75, repeated_frames=1, stream_restart=True, frame_id="cam",
    )
    msg = unit_to_msg(unit)
    assert msg.header.stamp.sec == 1234 and msg.frames[0].encoding == "rgb8"
    back = unit_from_msg(msg)
    assert (back.index, back.start_ns, back.duration_ns, back.frame_stamps_ns, back.audio_coverage,
            back.repeated_frames, back.stream_restart, back.frame_id) == (
            7, 1234 * S, S, unit.frame_stamps_ns, 0.75, 1, True, "cam")
    assert np.array_equal(back.audio, unit.audio)
    assert all(np.array_equal(a, b) for a, b in zip(back.frames, unit.frames))


def image_msg(stamp_ns, encoding="rgb8", width=64, height=48, data=None, step=None):
    msg = Image(height=height, width=width, encoding=encoding, step=step or width * 3)
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.data = data if data is not None else bytes(msg.step * height)
    return msg


def audio_msg(stamp_ns, data: bytes):
    msg = AudioDataStamped()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.audio.data = array.array("B", data)
    return msg


def pipeline(**kwargs):
    errors = []
    p = SynchronizerPipeline(AssemblerConfig(), AudioFormat(16000, 1, "S16LE"),
                             on_error=lambda reason, text: errors.append((reason, text)), **kwargs)
    return p, errors


def test_bad_input_is_counted_and_nothing_accepted_is_lost():
    p, errors = pipeline()
    start = 1000 * S
    out = []
    for i in range(90):  # 3 s of 30 fps, every 10th frame broken in some way
        stamp = start + i * S // 30
        if i % 10 == 3:
            out += p.image(image_msg(stamp, encoding="weird8"))
        elif i % 10 == 6:
            out += p.image(image_msg(stamp, data=bytes(10)))
        else:
            out += p.image(image_msg(stamp))
    for k in range(150):  # 3 s of 20 ms chunks, some with an odd length
        data = np.full(320, 1000, "<i2").tobytes()
        out += p.audio(audio_msg(start + k * 20_000_000, data[:-1] if k == 77 else data))
    out += p.image(image_msg(0))  # unstamped
    assert p.counters["errors.unsupported_encoding"] == 9
    assert p.counters["errors.truncated"] == 9
    assert p.counters["errors.bad_length"] == 1
    assert p.counters["errors.unstamped"] == 1
    assert {reason for reason, _ in errors} == {"unsupported_encoding", "truncated", "bad_length", "unstamped"}
    assert [u.index for u in out] == [0, 1]
    assert out[0].audio_coverage == 1.0 and out[1].audio_coverage == pytest.approx(0.98)
    assert all(len(u.frames) == 2 and u.frames[0].height == 56 for u in out)  # 64x48 -> 56x56


def test_mp3_audio_info_gives_a_clear_error():
    p, errors = pipeline()
    p.audio_info(AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE", coding_format="mp3"))
    assert p.audio(audio_msg(1000 * S, bytes(640))) == []
    assert errors[0][0] == "unsupported_coding" and "format:=wave" in errors[0][1]


def test_audio_waits_for_info_when_an_info_publisher_exists():
    # Chunks that arrive before the first AudioInfo are kept and decoded once it arrives (the
    # two topics race over DDS), so the live node sees the same audio as a bag replay.
    p, _ = pipeline(info_publisher_exists=lambda: True)
    p.audio(audio_msg(1000 * S, bytes(3840)))
    assert p.counters["audio_chunks_waiting_for_info"] == 1
    assert p.assembler.stats["audio_chunks_in"] == 0
    p.audio_info(AudioInfo(channels=2, sample_rate=48000, sample_format="S16LE", coding_format="wave"))
    assert p.audio_format() == AudioFormat(48000, 2, "S16LE", "wave")
    # (the first stream starts once jump_confirm_count = 3 messages agree on its time)
    for k in (1, 2):
        p.audio(audio_msg(1000 * S + k * 20_000_000, bytes(3840)))
    assert p.assembler.stats["audio_chunks_in"] == 3  # the waiting chunk, decoded with the info
    assert p.counters.get("audio_chunks_dropped_waiting_for_info", 0) == 0


def test_compressed_images_decode_lazily_and_corrupt_ones_are_reported():
    import cv2

    p, errors = pipeline()
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), (10, 200, 30), np.uint8))  # BGR
    start = 1000 * S
    stamps = [start + i * S // 30 for i in range(60)] + [start + S // 4]  # last: nearest 0.25 s
    out = []
    for stamp in sorted(stamps):
        msg = CompressedImage(format="jpeg")
        msg.header.stamp = ns_to_time(stamp)
        corrupt = stamp == start + S // 4
        msg.data = array.array("B", b"garbage" if corrupt else jpeg.tobytes())
        out += p.compressed_image(msg)
    for k in range(100):
        out += p.audio(audio_msg(start + k * 20_000_000, bytes(640)))
    out += p._to_msgs(p.assembler.flush())
    assert [reason for reason, _ in errors] == ["corrupt_compressed"]
    assert p.counters["errors.corrupt_compressed"] == 1 and p.counters["images_in"] == 61
    assert [u.index for u in out] == [0, 1] and out[0].repeated_frames == 1
    rgb = np.frombuffer(out[1].frames[0].data, np.uint8).reshape(56, 56, 3)
    assert np.abs(rgb.astype(int) - [30, 200, 10]).max() <= 3


# --- integration: real processes over DDS ------------------------------------------------------
PUBLISHER = ("import sys; sys.path.insert(0, {tests!r}); import sensor_publishers as s; "
             "s.{fn}(seconds={sec}, start_at={start_at})")


def test_node_with_real_camera_and_microphone_processes():
    """camera (640x480 bgr8 @ 30 fps) + microphone (48 kHz stereo S16LE, 20 ms chunks, AudioInfo)
    -> synchronizer_node (its own process) -> units checked here."""
    tests = str(REPO / "tests")
    node = start_python("roma_ros.nodes.synchronizer_node", "--ros-args", "--params-file",
                        str(REPO / "config" / "roma.yaml"), "-p", "modality_timeout:=1.0")
    processes = [node]
    received: list[MultimodalUnit] = []
    try:
        with ros_context() as (context, executor):
            listener = rclpy.create_node("unit_listener", context=context)
            executor.add_node(listener)
            subscription = listener.create_subscription(
                MultimodalUnit, "units", received.append,
                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
            diagnostics = []
            listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
            assert wait_until(lambda: subscription.get_publisher_count() > 0, 30, executor), \
                "synchronizer_node did not come up:\n" + stop_process(node)
            start_at = time.time() + 4.0  # both sensors start together (after their start-up)
            for fn in ("camera", "microphone"):
                code = PUBLISHER.format(tests=tests, fn=fn, sec=7.0, start_at=start_at)
                processes.append(start_python(code, code=True))
            wait_until(lambda: len(received) >= 6, 40, executor)
            units = [unit_from_msg(msg) for msg in received]
            statuses = [st for array_msg in diagnostics for st in array_msg.status
                        if st.name == "synchronizer: sensor sync"]
    finally:
        outputs = [stop_process(p) for p in processes]
    assert len(units) >= 6, f"got {len(units)} units; node output:\n{outputs[0]}"
    assert [u.index for u in units] == list(range(len(units)))
    assert [u.stream_restart for u in units] == [True] + [False] * (len(units) - 1)
    with_frames = [i for i, u in enumerate(units) if u.frames]
    with_audio = [i for i, u in enumerate(units) if u.audio_coverage > 0]
    assert with_frames and with_frames == list(range(with_frames[0], len(units))), \
        "once the camera has started, every unit has frames"
    assert with_frames[0] <= 1 and with_audio[0] <= 1, "the sensors did not start together"
    for unit in units:
        assert unit.start_ns % S == 0 and unit.duration_ns == S and unit.sample_rate == 16000
        assert unit.audio.shape == (16000,) and unit.audio.dtype == np.float32
        assert len(unit.frames) in (0, 2) and all(f.shape == (196, 280, 3) for f in unit.frames)
        for frame, stamp in zip(unit.frames, unit.frame_stamps_ns):
            assert unit.start_ns <= stamp < unit.end_ns or unit.repeated_frames
            assert np.all(frame == np.array(frame_colour(stamp), np.uint8)), "frame/stamp mismatch"
    values = [{kv.key: kv.value for kv in st.values} for st in statuses]
    assert max(float(v["image_rate_hz"]) for v in values) == pytest.approx(30, abs=6)
    assert max(float(v["audio_rate_hz"]) for v in values) == pytest.approx(50, abs=10)
    assert int(values[-1]["units_out"]) >= 5 and "assembler.frames_decoded" in values[-1]
    steady = units[max(with_frames[0], with_audio[0]) + 1:-1]  # both sensors ran all along
    assert len(steady) >= 2
    for unit in steady:
        assert unit.audio_coverage > 0.95 and unit.repeated_frames == 0
        spectrum = np.abs(np.fft.rfft(unit.audio * np.hanning(16000)))
        assert abs(np.argmax(spectrum) - TONE_HZ) <= 1
        assert abs(np.abs(unit.audio).max() - TONE_AMPLITUDE) < 0.02
        slots = [(s - unit.start_ns) * 2 // S for s in unit.frame_stamps_ns]
        assert slots == [0, 1]


def test_overlong_outside_strings_are_refused_counted_and_logged_escaped():
    """frame_id, encoding and CompressedImage.format are kept or logged: over TEXT_LIMIT chars
    the message is refused (errors.text_too_long); log text is one escaped, bounded line."""
    from roma_ros.pipeline.synchronizer import TEXT_LIMIT

    p, errors = pipeline()
    long_id = image_msg(1000 * S)
    long_id.header.frame_id = "cam\n[ERROR] forged" + "x" * 10_000
    compressed = CompressedImage(format="jpeg" + "y" * TEXT_LIMIT, data=array.array("B", b"\xff\xd8"))
    compressed.header.stamp = ns_to_time(1000 * S)
    assert p.image(long_id) == [] and p.compressed_image(compressed) == []
    assert p.image(image_msg(1000 * S, encoding="rgb8" + "z" * 300)) == []
    assert p.counters["errors.text_too_long"] == 3
    assert all("\n" not in text and len(text) < 200 for _, text in errors), errors
    ok = image_msg(1000 * S)
    ok.header.frame_id = "c" * TEXT_LIMIT  # at the limit: accepted
    p.image(ok)
    assert p.counters["errors.text_too_long"] == 3 and p.counters["images_in"] == 4


def test_non_finite_input_audio_is_counted_as_an_error():
    p, errors = pipeline(format_source="parameters")
    p.fallback_format = AudioFormat(16000, 1, "F32LE")
    chunk = np.full(320, 0.1, np.float32)
    chunk[[3, 4]] = [np.nan, np.inf]
    p.audio(audio_msg(1000 * S, chunk.tobytes()))
    assert p.counters["errors.nonfinite_audio"] == 1 and p.counters["audio_nonfinite_samples"] == 2
    assert [reason for reason, _ in errors] == ["nonfinite_audio"]


def test_an_empty_audio_chunk_is_counted_not_ignored():
    p, errors = pipeline()
    assert p.audio(audio_msg(1000 * S, b"")) == []
    assert p.counters["errors.empty_audio"] == 1
    assert errors == [("empty_audio", "audio chunk without samples")]
    data = np.full(320, 1000, "<i2").tobytes()
    out = p.mark_silent("video")
    for k in range(60):  # later audio is still assembled
        out += p.audio(audio_msg(1000 * S + k * 20_000_000, data))
    assert [u.index for u in out] == [0] and out[0].audio_coverage == 1.0


def test_without_audio_info_the_assumed_format_is_told_once():
    warnings = []
    p = SynchronizerPipeline(AssemblerConfig(), AudioFormat(16000, 1, "S16LE"), on_warning=warnings.append)
    data = np.full(320, 1000, "<i2").tobytes()
    for k in range(3):
        p.audio(audio_msg(1000 * S + k * 20_000_000, data))
    assert len(warnings) == 1 and p.counters["audio_format_assumed"] == 1
    assert "S16LE, 16000 Hz, 1 channel" in warnings[0]
    assert all(name in warnings[0] for name in ("audio_info:=", "audio.sample_rate", "audio.channels",
                                                "audio.sample_format", "audio.format_source"))


def test_with_audio_info_nothing_is_assumed():
    warnings = []
    p = SynchronizerPipeline(AssemblerConfig(), AudioFormat(16000, 1, "S16LE"), on_warning=warnings.append)
    p.audio_info(AudioInfo(channels=2, sample_rate=48000, sample_format="S16LE", coding_format="wave"))
    p.audio(audio_msg(1000 * S, bytes(3840)))
    assert warnings == [] and p.counters["audio_format_assumed"] == 0


def test_the_other_image_type_on_our_topic_names_the_setting_to_change():
    from roma_ros.nodes.synchronizer_node import _image_type_hint

    assert "compressed:=true" in _image_type_hint("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
    assert "compressed:=false" in _image_type_hint("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image")
    assert _image_type_hint("audio_common_msgs/msg/AudioInfo", "std_msgs/msg/String") == ""
