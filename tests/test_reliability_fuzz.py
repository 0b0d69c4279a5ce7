"""Bad input against the LIVE nodes over DDS: >= 10,000 generated bad messages on every input of
two synchronizer_node processes (raw and compressed camera) and one engine_node (tiny random
checkpoint), interleaved with valid camera + microphone traffic.

Checks: no process dies; every rejected message is counted on /diagnostics under its reason
(exact per-reason totals); warnings are rate-limited (at most one per reason per 5 s); the
valid traffic still gives contiguous, correct units (2 frames whose colour matches their stamp,
16,000 samples of the 440 Hz tone) and the engine scores every one of them.

Stream time runs faster than wall time (units come from stamps, not arrival), so 40 s of
sensor data plus the bad messages take about 15 s. The generator is seeded: failures reproduce.
"""
from __future__ import annotations

import math
import random
import re
import time
from collections import Counter

import cv2
import numpy as np
import pytest
import rclpy
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from reliability import Diagnostics, S, audio, audio_info, image, start_node, tone
from roma_ros.action import Ask
from roma_ros.msg import MultimodalUnit, Query, SpeakScore
from roma_ros.pipeline.convert import ns_to_time, unit_from_msg
from roma_ros.srv import ClearTask, SetTask
from rosutil import ros_context, stop_process, wait_until
from sensor_publishers import frame_colour

SEED = 20260409
SECONDS = 40
TICK = S // 10  # one valid frame and one 100 ms audio chunk per tick
T0 = 1_700_000_000 * S
RAW, JPEG, ENGINE = "fz/synchronizer: sensor sync", "fzc/synchronizer: sensor sync", "fz/engine: engine"
DEEP = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
SYNC_PARAMS = ["qos.image.reliability:=reliable", "qos.image.depth:=2000",
               "qos.audio.reliability:=reliable", "qos.audio.depth:=2000",
               "qos.audio_info.reliability:=reliable", "qos.audio_info.depth:=500"]
BAD_ENCODINGS = ["weird8", "", "rgb9", "32FC1", "16UC1", "jpeg", "RGB8", "bgr 8", "\u00e9\u00e9", "x" * 300]
BAD_FORMATS = ["h264", "theora", "compressedDepth png", "ffmpeg", "hevc"]


def bad_image(rng: random.Random, stamp: int, expected: Counter) -> Image:
    kind = rng.choice(["encoding", "size", "odd_yuv", "step", "truncated", "huge", "unstamped"])
    if kind == "encoding":
        encoding = rng.choice(BAD_ENCODINGS)
        expected["text_too_long" if len(encoding) > 256 else "unsupported_encoding"] += 1
        return image(stamp, 8, 8, encoding=encoding, nbytes=192)
    if kind == "size":
        expected["bad_size"] += 1
        return image(stamp, rng.choice([0, 8]), 0, nbytes=rng.randrange(0, 64)) if rng.random() < .5 else \
            image(stamp, 0, 8, step=0, nbytes=16)
    if kind == "odd_yuv":
        expected["bad_size"] += 1
        return image(stamp, 9, 4, encoding="yuv422", step=18, nbytes=72)
    if kind == "step":
        expected["bad_step"] += 1
        return image(stamp, 16, 8, step=rng.randrange(0, 48), nbytes=16 * 8 * 3)
    if kind == "truncated":
        expected["truncated"] += 1
        return image(stamp, 16, 8, nbytes=rng.randrange(0, 16 * 8 * 3))
    if kind == "huge":  # a header claiming 60000x60000 with a few bytes of data
        expected["truncated"] += 1
        return image(stamp, 60000, 60000, step=180000, nbytes=10)
    expected["unstamped"] += 1
    return image(0, 16, 8)


def bad_audio(rng: random.Random, stamp: int, expected: Counter) -> AudioDataStamped:
    kind = rng.choice(["length", "length", "unstamped"])
    if kind == "length":  # F32LE needs whole 4-byte samples
        expected["bad_length"] += 1
        return audio(stamp, bytes(4 * rng.randrange(0, 400) + rng.choice([1, 2, 3])))
    expected["unstamped"] += 1
    return audio(0, tone(0, 160).tobytes())


def bad_info(rng: random.Random, expected: Counter) -> AudioInfo:
    kind = rng.choice(["rate", "rate", "channels", "format", "coding"])
    if kind == "rate":
        expected["bad_sample_rate"] += 1
        return audio_info(rate=rng.choice([0, 1, 999, 384_001, 2**31 - 1]))
    if kind == "channels":
        expected["bad_channels"] += 1
        return audio_info(channels=rng.choice([0, 65, 255]))
    if kind == "format":
        expected["unsupported_sample_format"] += 1
        return audio_info(fmt=rng.choice(["S12LE", "float", "F16LE", "mp3"]))
    expected["unsupported_coding"] += 1
    return audio_info(coding=rng.choice(["mp3", "opus", "aac", "flac"]))


def bad_compressed(rng: random.Random, stamp: int, expected: Counter) -> CompressedImage:
    msg = CompressedImage()
    msg.header.stamp = ns_to_time(stamp)
    if rng.random() < 0.5:
        expected["truncated"] += 1
        msg.format = "jpeg"
    else:
        expected["unsupported_format"] += 1
        msg.format = rng.choice(BAD_FORMATS)
        msg.data = bytes(rng.randrange(1, 64))
    return msg


def jpeg(stamp: int, data: bytes | None = None) -> CompressedImage:
    msg = CompressedImage(format="jpeg")
    msg.header.stamp = ns_to_time(stamp)
    if data is None:
        bgr = np.broadcast_to(np.array(frame_colour(stamp)[::-1], np.uint8), (120, 160, 3)).copy()
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    msg.data = data
    return msg


def bad_unit(rng: random.Random) -> MultimodalUnit:
    msg = MultimodalUnit(index=999_999, sample_rate=16000)
    frame = image(T0, 8, 8, encoding=rng.choice(["bgr8", "mono8"]), nbytes=192) if rng.random() < 0.5 \
        else image(T0, 64, 64, nbytes=rng.randrange(0, 1000))
    msg.frames = [frame, frame]
    return msg


def check_units(units: list[MultimodalUnit], jpeg_colour_tolerance: int = 0) -> list:
    decoded = [unit_from_msg(u) for u in units]
    assert [u.index for u in decoded] == list(range(len(decoded)))
    assert [u.stream_restart for u in decoded] == [True] + [False] * (len(decoded) - 1)
    for unit in decoded:
        assert unit.start_ns == T0 + unit.index * S and unit.duration_ns == S
        assert unit.audio.shape == (16000,) and np.isfinite(unit.audio).all()
        assert len(unit.frames) == 2
        for frame, stamp in zip(unit.frames, unit.frame_stamps_ns):
            assert np.abs(frame.astype(int) - frame_colour(stamp)).max() <= jpeg_colour_tolerance
    for unit in decoded[:-1]:  # the last unit may end before the audio does
        assert unit.audio_coverage == 1.0
        spectrum = np.abs(np.fft.rfft(unit.audio * np.hanning(16000)))
        assert abs(int(np.argmax(spectrum)) - 440) <= 1
    return decoded


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))


def test_ten_thousand_bad_messages_against_the_live_nodes(checkpoint):
    rng = random.Random(SEED)
    expected = {"raw": Counter(), "jpeg": Counter(), "engine": Counter()}
    sent = Counter()
    raw = start_node("synchronizer", "/fz", *SYNC_PARAMS)
    jpg = start_node("synchronizer", "/fzc", "compressed:=true", *SYNC_PARAMS)
    engine = start_node("engine", "/fz", f"model_path:={checkpoint}", "queue_size:=1000",
                        "max_queries_per_minute:=0", "max_answer_tokens:=6", "segment_tokens:=6",
                        "qos.query.depth:=2000",
                        # ~11 units/s (valid at 3.3x real time + bad ones) while thousands of junk
                        # requests keep the executor busy: a deep reader, so every unit reaches the
                        # engine and the counters, not DDS history, are what this test checks
                        "qos.units.depth:=1000")
    procs = {"raw": raw, "jpeg": jpg, "engine": engine}
    units = {"raw": [], "jpeg": []}
    scores: list[SpeakScore] = []
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("fuzzer", context=context)
            executor.add_node(node)
            diag = Diagnostics(node)
            pub = {
                "image": node.create_publisher(Image, "/fz/image", DEEP),
                "audio": node.create_publisher(AudioDataStamped, "/fz/audio", DEEP),
                "info": node.create_publisher(AudioInfo, "/fz/audio_info", DEEP),
                "cimage": node.create_publisher(CompressedImage, "/fzc/image/compressed", DEEP),
                "caudio": node.create_publisher(AudioDataStamped, "/fzc/audio", DEEP),
                "cinfo": node.create_publisher(AudioInfo, "/fzc/audio_info", DEEP),
                "query": node.create_publisher(Query, "/fz/query", DEEP),
                "units": node.create_publisher(MultimodalUnit, "/fz/units", DEEP),
            }
            node.create_subscription(MultimodalUnit, "/fz/units", lambda m: m.index != 999_999 and units["raw"].append(m), DEEP)
            node.create_subscription(MultimodalUnit, "/fzc/units", units["jpeg"].append, DEEP)
            node.create_subscription(SpeakScore, "/fz/speak_score", scores.append, DEEP)
            # deep response queues: a few hundred requests are in flight at once
            set_task = node.create_client(SetTask, "/fz/set_task", qos_profile=DEEP)
            clear_task = node.create_client(ClearTask, "/fz/clear_task", qos_profile=DEEP)
            ask = ActionClient(node, Ask, "/fz/ask", goal_service_qos_profile=DEEP)
            ready = lambda: (all(p.get_subscription_count() > 0 for p in pub.values())  # noqa: E731
                             and set_task.service_is_ready() and ask.server_is_ready())
            assert wait_until(ready, 90, executor), {k: stop_process(p) for k, p in procs.items()}
            for key in ("info", "cinfo"):
                pub[key].publish(audio_info())
            wait_until(lambda: False, 1.0, executor)

            futures, goal_futures = [], []
            bad_set_tasks = [SetTask.Request(task_id="", instruction="x", mode="alert", threshold=0.5, window=1),
                             SetTask.Request(task_id="t", instruction="x", mode="sing", threshold=0.5, window=1),
                             SetTask.Request(task_id="t", instruction="x", mode="alert", threshold=math.nan, window=1),
                             SetTask.Request(task_id="t", instruction="x", mode="alert", threshold=1.5, window=1),
                             SetTask.Request(task_id="t", instruction="x", mode="alert", threshold=-0.1, window=1),
                             SetTask.Request(task_id="t", instruction="x", mode="alert", threshold=0.5, window=0),
                             SetTask.Request(task_id="t", instruction="x", mode="narration", threshold=0.5,
                                             window=1, cooldown=math.nan),
                             SetTask.Request(task_id="t", instruction="x", mode="alert", threshold=0.5,
                                             window=1, cooldown=-1.0)]
            ticks = SECONDS * 10
            started = time.monotonic()
            for k in range(ticks):
                base = T0 + k * TICK
                glitches_ok = 5 <= k < ticks - 5
                # valid traffic: one frame (30 ms into the tick) and one 100 ms F32 tone chunk
                samples = tone(k * 1600, 1600)
                if k % 7 == 3:  # a valid chunk carrying a few non-finite samples
                    samples[5], samples[10], samples[11] = np.nan, np.inf, -np.inf
                    expected["raw"]["nonfinite"] += 3
                    expected["raw"]["nonfinite_audio"] += 1
                pub["image"].publish(image(base + 30_000_000))
                pub["audio"].publish(audio(base, samples.tobytes()))
                pub["cimage"].publish(jpeg(base + 30_000_000))
                pub["caudio"].publish(audio(base, tone(k * 1600, 1600).tobytes()))
                if k % 10 == 0:
                    pub["info"].publish(audio_info())
                    pub["cinfo"].publish(audio_info())
                sent["valid"] += 5
                # bad camera frames (11 per tick) and at most one glitched stamp per modality
                for _ in range(11):
                    pub["image"].publish(bad_image(rng, base + rng.randrange(TICK), expected["raw"]))
                    sent["bad"] += 1
                if glitches_ok and k % 3 == 0:
                    jump = rng.choice([3600 * S, 100 * S, -50 * S, -5 * S])
                    pub["image"].publish(image(base + jump))
                    expected["raw"]["stamp_glitches"] += 1
                    expected["raw"]["stamp_outlier"] += 1
                    sent["bad"] += 1
                # bad audio (6 per tick), glitched audio stamps, bad AudioInfo
                for _ in range(6):
                    pub["audio"].publish(bad_audio(rng, base + rng.randrange(TICK), expected["raw"]))
                    sent["bad"] += 1
                if glitches_ok and k % 3 == 1:
                    jump = rng.choice([3600 * S, 100 * S, -50 * S, -5 * S])
                    pub["audio"].publish(audio(base + jump, tone(0, 1600).tobytes()))
                    expected["raw"]["stamp_glitches"] += 1
                    expected["raw"]["stamp_outlier"] += 1
                    sent["bad"] += 1
                if k % 4 != 0:
                    pub["info"].publish(bad_info(rng, expected["raw"]))
                    sent["bad"] += 1
                # compressed camera: empty / video codecs, and corrupt JPEGs exactly at a slot's
                # middle (so they are the frame chosen, decoded, and rejected)
                for _ in range(2):
                    pub["cimage"].publish(bad_compressed(rng, base + rng.randrange(TICK), expected["jpeg"]))
                    sent["bad"] += 1
                if k % 10 == 2 and 5 <= k < ticks - 20:  # in units that surely go out
                    garbage = b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(10, 300)))
                    pub["cimage"].publish(jpeg(T0 + (k // 10) * S + S // 4, garbage))
                    expected["jpeg"]["corrupt_compressed"] += 1
                    sent["bad"] += 1
                # engine: questions (empty, blank, too long; sometimes a real one), bad units
                for _ in range(4):
                    text = rng.choice(["", "   \n\t", "y" * rng.randrange(2001, 20000)])
                    pub["query"].publish(Query(id=f"fz{sent['bad']}", text=text))
                    expected["engine"]["query_rejected"] += 1
                    sent["bad"] += 1
                if k % 80 == 40:
                    pub["query"].publish(Query(id=f"ok{k}", text="what do you see?"))
                    sent["valid"] += 1
                if k % 4 == 2:
                    pub["units"].publish(bad_unit(rng))
                    expected["engine"]["bad_unit"] += 1
                    sent["bad"] += 1
                # services and the ask action: a few bad requests per tick
                if k % 2 == 0:
                    futures.append(set_task.call_async(bad_set_tasks[(k // 2) % len(bad_set_tasks)]))
                    expected["engine"]["bad_task"] += 1
                    sent["bad"] += 1
                if k % 8 == 1:
                    futures.append(clear_task.call_async(ClearTask.Request(task_id=f"nope{k}")))
                    sent["bad"] += 1
                if k % 4 == 3:
                    question = rng.choice(["", "  ", "z" * 2001, "q" * 100_000])
                    goal_futures.append(ask.send_goal_async(Ask.Goal(question=question)))
                    expected["engine"]["ask_rejected"] += 1
                    sent["bad"] += 1
                for _ in range(20):
                    executor.spin_once(timeout_sec=0)
                time.sleep(max(0.0, started + (k + 1) * 0.03 - time.monotonic()))
            stream_wall = time.monotonic() - started
            assert wait_until(lambda: all(f.done() for f in futures + goal_futures), 30, executor), \
                (sum(f.done() for f in futures), len(futures), sum(f.done() for f in goal_futures),
                 len(goal_futures), diag.latest.get(ENGINE), stop_process(engine)[-3000:])

            def settled():
                return (len(units["raw"]) >= SECONDS - 1 and len(units["jpeg"]) >= SECONDS - 1
                        and len(scores) >= len(units["raw"])
                        and diag.get(RAW, "images_in") >= ticks * 11)
            wait_until(settled, 60, executor)
            wait_until(lambda: False, 2.5, executor)  # one more diagnostics period after the last unit
            statuses = {k: dict(v) for k, v in diag.latest.items()}
            responses = [f.result() for f in futures]
            goals = [f.result() for f in goal_futures]
            node.destroy_node()
    finally:
        outputs = {k: stop_process(p) for k, p in procs.items()}

    # 0. nobody crashed (each process exited on our SIGINT, not before; no traceback)
    for name, output in outputs.items():
        assert "Traceback" not in output, (name, output[-3000:])
    engine_status, raw_status, jpeg_status = statuses[ENGINE], statuses[RAW], statuses[JPEG]
    print(f"fuzz: {sent['bad']} bad + {sent['valid']} valid messages in {stream_wall:.1f} s")
    assert sent["bad"] >= 10_000
    # 1. the services answered every bad request with success=False; the ask goals were rejected
    assert responses and not any(r.success for r in responses)
    assert goals and not any(g.accepted for g in goals)
    # 2. engine counters: exactly the rejected requests, per reason; valid units all scored
    engine_errors = {k[7:]: int(v) for k, v in engine_status.items() if k.startswith("errors.")}
    print("engine errors:", engine_errors)
    assert engine_errors == dict(expected["engine"])
    assert int(engine_status.get("units_dropped", 0)) == 0
    decoded_raw = check_units(units["raw"])
    assert len(decoded_raw) >= SECONDS - 1
    assert sorted(s.unit_index for s in scores) == [u.index for u in decoded_raw]
    # 3. synchronizer counters: exactly the rejected messages, per reason
    raw_errors = {k[7:]: int(v) for k, v in raw_status.items() if k.startswith("errors.")}
    jpeg_errors = {k[7:]: int(v) for k, v in jpeg_status.items() if k.startswith("errors.")}
    print("raw synchronizer errors:", raw_errors, "glitches:", raw_status.get("assembler.stamp_glitches"))
    print("compressed synchronizer errors:", jpeg_errors)
    want_raw = {k: v for k, v in expected["raw"].items() if k not in ("stamp_glitches", "nonfinite")}
    assert raw_errors == want_raw
    assert int(raw_status["assembler.stamp_glitches"]) == expected["raw"]["stamp_glitches"]
    assert int(raw_status["audio_nonfinite_samples"]) == expected["raw"]["nonfinite"]
    assert int(raw_status.get("assembler.stream_restarts", 0)) == 0
    assert jpeg_errors == dict(expected["jpeg"])
    # 4. valid traffic kept producing correct units (compressed: JPEG colours within 3 levels)
    decoded_jpeg = check_units(units["jpeg"], jpeg_colour_tolerance=3)
    assert len(decoded_jpeg) >= SECONDS - 1
    assert sum(u.repeated_frames for u in decoded_jpeg) == expected["jpeg"]["corrupt_compressed"]
    # 5. warnings are rate-limited: at most one per reason per 5 s (log_interval)
    budget = 2 + (stream_wall + 10) / 5
    for name, output in outputs.items():
        per_reason = Counter(re.findall(r"\]: ([a-z_]+): ", output))
        assert per_reason, (name, output[-2000:])
        assert max(per_reason.values()) <= budget, (name, per_reason)
