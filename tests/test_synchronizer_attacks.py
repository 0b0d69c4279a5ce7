"""Attacks from the security review, against the LIVE synchronizer_node over DDS.

Each test runs one node process, sends valid camera + microphone traffic with the attack mixed
in, and checks that the node keeps working (contiguous, correct units after the attack), that
the rejection is counted under errors.<reason> on /diagnostics, and, where the attack was about
memory, that the node's peak RSS stays bounded.

Stream time runs faster than wall time (units come from stamps, not arrival): ticks of 100 ms
of sensor time are sent every 30 ms of wall time, on reliable deep queues so that counts are
exact.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from reliability import Diagnostics, S, audio, audio_info, image, start_node, tone
from roma_ros.msg import MultimodalUnit
from roma_ros.pipeline.convert import ns_to_time, unit_from_msg
from rosutil import ros_context, stop_process, wait_until
from sensor_publishers import frame_colour

TICK = S // 10
T0 = 1_700_000_000 * S
DEEP = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_INPUTS = ("qos.image.reliability:=reliable", "qos.image.depth:=2000",
                   "qos.audio.reliability:=reliable", "qos.audio.depth:=2000",
                   "qos.audio_info.reliability:=reliable", "qos.audio_info.depth:=100",
                   "diagnostics_period:=0.5")
WARN, ERROR = "1", "2"


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Rig:
    """A test node with a unit listener, a /diagnostics reader and input publishers on `ns`."""

    def __init__(self, context, executor, ns: str, compressed: bool = False, info: bool = True):
        self.node = rclpy.create_node("attacker", context=context)
        executor.add_node(self.node)
        self.executor, self.ns = executor, ns
        self.name = f"{ns.strip('/')}/synchronizer: sensor sync"
        self.diag = Diagnostics(self.node)
        self.units: list[MultimodalUnit] = []
        self.node.create_subscription(MultimodalUnit, f"{ns}/units", self.units.append, DEEP)
        self.image = self.node.create_publisher(
            CompressedImage if compressed else Image, f"{ns}/image/compressed" if compressed else f"{ns}/image", DEEP)
        self.audio = self.node.create_publisher(AudioDataStamped, f"{ns}/audio", DEEP)
        self.info = self.node.create_publisher(AudioInfo, f"{ns}/audio_info", DEEP) if info else None
        self._sent = 0
        self._started = time.monotonic()

    def ready(self, proc) -> None:
        pubs = [self.image, self.audio] + ([self.info] if self.info else [])
        assert wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 60, self.executor), \
            stop_process(proc)

    def pace(self) -> None:
        """Spin, then hold the send rate at one tick per 30 ms of wall time."""
        self._sent += 1
        for _ in range(10):
            self.executor.spin_once(timeout_sec=0)
        time.sleep(max(0.0, self._started + self._sent * 0.03 - time.monotonic()))

    def tick(self, k: int, samples=None, rate: int = 16_000, origin: int = T0) -> int:
        """Sensor tick k (100 ms): AudioInfo once a second, a frame 30 ms in, the audio chunk
        (`samples`, or a tone); returns the tick's stamp."""
        base = origin + k * TICK
        if k % 10 == 0:
            self.info.publish(audio_info(rate=rate))
        n = rate // 10
        self.image.publish(image(base + 30_000_000))
        self.audio.publish(audio(base, (tone(k * n, n, rate) if samples is None else samples).tobytes()))
        return base

    def value(self, key: str, default=0):
        return self.diag.get(self.name, key, default)

    def decoded(self):
        return [unit_from_msg(u) for u in self.units]


def assert_one_contiguous_stream(units) -> None:
    assert units, "no units"
    assert [u.index for u in units] == list(range(len(units))), [u.index for u in units]
    assert [u.stream_restart for u in units] == [True] + [False] * (len(units) - 1)


def assert_frames_match_their_stamps(units) -> None:
    for unit in units:
        for frame, stamp in zip(unit.frames, unit.frame_stamps_ns):
            assert np.all(frame == np.array(frame_colour(stamp), np.uint8)), "a unit carries a foreign frame"


def test_lone_early_and_late_stamps_are_outliers_not_restarts():
    """F1: one frame (or chunk) stamped 1.5-5 s ahead or 3 s behind once restarted the stream
    and left the other input stale for good (coverage 0, status ok)."""
    sync = start_node("synchronizer", "/sa1", *RELIABLE_INPUTS)
    bogus = {15: ("video", 3 * S), 22: ("audio", 3 * S), 29: ("video", -3 * S), 36: ("audio", -3 * S),
             43: ("video", 4_900_000_000), 50: ("audio", 1_500_000_000)}
    try:
        with ros_context() as (context, executor):
            rig = Rig(context, executor, "/sa1")
            rig.ready(sync)
            for k in range(70):
                base = rig.tick(k)
                if k in bogus:
                    modality, offset = bogus[k]
                    if modality == "video":
                        rig.image.publish(image(base + offset))
                    else:
                        rig.audio.publish(audio(base + offset, np.full(1600, 0.9, np.float32).tobytes()))
                rig.pace()
            ok = wait_until(lambda: len(rig.units) >= 6 and rig.value("errors.stamp_outlier") >= 6, 30, executor)
            history = list(rig.diag.history.get(rig.name, []))
            errors = rig.diag.errors(rig.name)
            units = rig.decoded()
    finally:
        output = stop_process(sync)
    assert ok, (len(units), errors, output[-3000:])
    assert "Traceback" not in output
    assert errors == {"stamp_outlier": 6}, errors
    assert int(history[-1].get("assembler.stream_restarts", 0)) == 0
    assert_one_contiguous_stream(units)
    whole = [u for u in units if u.end_ns <= T0 + 70 * TICK]
    assert len(whole) >= 6
    assert all(u.audio_coverage == 1.0 and u.repeated_frames == 0 for u in whole), \
        [(u.index, u.audio_coverage, u.repeated_frames) for u in whole]
    assert all(not np.any(u.audio == np.float32(0.9)) for u in units)
    assert_frames_match_their_stamps(units)
    bogus_stamps = {T0 + k * TICK + off for k, (m, off) in bogus.items() if m == "video"}
    assert not bogus_stamps & {s for u in units for s in u.frame_stamps_ns}
    assert ERROR not in {h["_level"] for h in history} and history[-1]["starved_inputs"] == "none"


def test_an_input_on_another_clock_is_reported_starved_and_recovers():
    """F1 (status): frames stamped 30 s ahead while the audio goes on must not restart the
    stream nor pass as "ok": /diagnostics names the starved input (WARN, then ERROR while it
    lasts); once the camera's stamps are right again, frames come back in the same stream."""
    sync = start_node("synchronizer", "/sa2", *RELIABLE_INPUTS)
    try:
        with ros_context() as (context, executor):
            rig = Rig(context, executor, "/sa2")
            rig.ready(sync)
            k = 0

            def send(ticks: int, video_offset: int = 0) -> None:
                nonlocal k
                for _ in range(ticks):
                    base = T0 + k * TICK
                    if k % 10 == 0:
                        rig.info.publish(audio_info())
                    rig.image.publish(image(base + 30_000_000 + video_offset))
                    rig.audio.publish(audio(base, tone(k * 1600, 1600).tobytes()))
                    rig.pace()
                    k += 1

            send(20)
            # Under load the node may match the publishers after their first messages went out;
            # the attack needs both inputs in the stream first, so go on until a whole unit arrives.
            first_whole = lambda: next((unit_from_msg(u) for u in rig.units  # noqa: E731
                                        if unit_from_msg(u).audio_coverage == 1.0), None)
            deadline = time.monotonic() + 60
            while first_whole() is None and time.monotonic() < deadline:
                send(1)
            assert first_whole() is not None, stop_process(sync)[-3000:]
            whole_from, skew_start = first_whole().start_ns, T0 + k * TICK
            send(150, video_offset=30 * S)
            history = lambda: rig.diag.history.get(rig.name, [])  # noqa: E731
            starved = wait_until(lambda: any(h["_level"] == ERROR for h in history()), 20, executor)
            during = list(history())
            skewed_until = T0 + k * TICK
            send(40)
            recovered = wait_until(lambda: any(unit_from_msg(u).start_ns > skewed_until + S for u in rig.units),
                                   20, executor)
            after_reports = history()[len(during):]
            units = rig.decoded()
            outliers = rig.value("errors.stamp_outlier")
    finally:
        output = stop_process(sync)
    assert starved, output[-3000:]
    reports = [h for h in during if "video arrives but reaches no unit" in h["_message"]]
    seen = [(h["_level"], h["_message"][:80]) for h in during]
    assert reports and reports[0]["_level"] == WARN and reports[-1]["_level"] == ERROR, seen
    assert reports[-1]["starved_inputs"] == "video"
    assert outliers >= 150 - 16  # all skewed frames, but those still held
    assert recovered, output[-3000:]
    assert any(h["starved_inputs"] == "none" and h["_level"] in (WARN, "0") for h in after_reports)
    assert_one_contiguous_stream(units)
    assert all(u.audio_coverage == 1.0 for u in units if whole_from <= u.start_ns and u.end_ns <= T0 + k * TICK)
    skewed = [u for u in units if skew_start + S <= u.start_ns and u.end_ns <= skewed_until]
    assert skewed and all(u.repeated_frames == 2 for u in skewed)  # the last good frame, repeated
    after = [u for u in units if u.start_ns >= skewed_until + S and u.end_ns <= T0 + k * TICK]
    assert after and all(u.repeated_frames == 0 for u in after)
    assert_frames_match_their_stamps(units)


def test_huge_finite_float_audio_at_48k_never_leaves_a_unit_non_finite():
    """F3: float32 chunks of 3e38 at 48 kHz came out of the resampler as NaN."""
    sync = start_node("synchronizer", "/sa3", *RELIABLE_INPUTS)
    rate, chunk = 48_000, 4800
    try:
        with ros_context() as (context, executor):
            rig = Rig(context, executor, "/sa3")
            rig.ready(sync)
            for k in range(70):
                rig.tick(k, np.full(chunk, 3e38, np.float32) if 20 <= k < 30 else None, rate)
                rig.pace()
            ok = wait_until(lambda: len(rig.units) >= 6 and rig.value("errors.audio_out_of_range") >= 10, 30, executor)
            errors = rig.diag.errors(rig.name)
            units = rig.decoded()
    finally:
        output = stop_process(sync)
    assert ok, (len(units), errors, output[-3000:])
    assert errors == {"audio_out_of_range": 10}, errors
    assert_one_contiguous_stream(units)
    assert all(np.isfinite(u.audio).all() for u in units)
    later = [u for u in units if u.start_ns >= T0 + 4 * S and u.end_ns <= T0 + 7 * S]
    assert later
    for unit in later:
        spectrum = np.abs(np.fft.rfft(unit.audio * np.hanning(16000)))
        assert unit.audio_coverage == 1.0 and abs(np.argmax(spectrum) - 440) <= 1
        assert abs(np.abs(unit.audio).max() - 0.3) < 0.02


def jpeg(stamp_ns: int, data: bytes | None = None, fmt: str = "jpeg", frame_id: str = "camera") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = frame_id
    if data is None:
        bgr = np.broadcast_to(np.array(frame_colour(stamp_ns)[::-1], np.uint8), (120, 160, 3)).copy()
        data = cv2.imencode(".png", bgr)[1].tobytes()  # lossless: colours stay exact
    msg.data = data
    return msg


def test_oversized_images_long_strings_and_forged_log_lines_are_refused():
    """F8 (a, c), F9 and a wrong-type publisher: a 20000x20000 PNG bomb (~390 KB, 2.4 GB RSS
    when decoded) and a JPEG claiming 30000x30000 are refused from their headers; strings over
    256 chars are refused; a format carrying a newline and ANSI codes reaches the log escaped;
    a std_msgs/String publisher on audio_info is reported. Valid frames keep flowing."""
    from test_image_decode import jpeg_claiming, png_bomb

    bomb = png_bomb(20000, 20000)
    forged = "h264\n[ERROR] [1700000000.000000000] [roma.engine]: FORGED LINE\x1b[2J\x1b[31m"
    sync = start_node("synchronizer", "/sa4", "compressed:=true", "audio.format_source:=parameters",
                      "audio.sample_format:=F32LE", *RELIABLE_INPUTS)
    try:
        with ros_context() as (context, executor):
            rig = Rig(context, executor, "/sa4", compressed=True, info=False)
            wrong = rig.node.create_publisher(String, "/sa4/audio_info", 10)
            rig.ready(sync)
            before = peak_rss_kb(sync.pid)
            attacks = {10: jpeg(T0 + 10 * TICK + 60_000_000, bomb, fmt="png"),
                       12: jpeg(T0 + 12 * TICK + 60_000_000, jpeg_claiming(30000, 30000)),
                       14: jpeg(T0 + 14 * TICK + 60_000_000, b"\x00" * 64, fmt=forged),
                       16: jpeg(T0 + 16 * TICK + 60_000_000, frame_id="camera" + "\n" * 10_000),
                       18: jpeg(T0 + 18 * TICK + 60_000_000, fmt="png" + " " * 1000)}
            for k in range(60):
                base = T0 + k * TICK
                rig.image.publish(jpeg(base + 30_000_000))
                rig.audio.publish(audio(base, tone(k * 1600, 1600).tobytes()))
                if k in attacks:
                    rig.image.publish(attacks[k])
                rig.pace()
            ok = wait_until(lambda: len(rig.units) >= 5 and sum(rig.diag.errors(rig.name).values()) >= 6,
                            30, executor)
            wait_until(lambda: "expected audio_common_msgs" in rig.value("_message", ""), 10, executor)
            after = peak_rss_kb(sync.pid)
            errors = rig.diag.errors(rig.name)
            message = rig.value("_message", "")
            wrong_publishers = rig.value("wrong_type_publishers")
            units = rig.decoded()
            rig.node.destroy_publisher(wrong)
    finally:
        output = stop_process(sync)
    assert ok, (errors, output[-3000:])
    assert errors == {"image_too_large": 2, "unsupported_format": 1, "text_too_long": 2, "wrong_topic_type": 1}, errors
    growth_mb = (after - before) / 1024
    print(f"peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MB with a 20000x20000 PNG bomb")
    assert growth_mb < 300, f"peak RSS grew {growth_mb:.0f} MB: the PNG bomb was decoded"
    assert ("topic /sa4/audio_info has a publisher of type std_msgs/msg/String, expected "
            "audio_common_msgs/msg/AudioInfo") in message and wrong_publishers == 1
    assert "\x1b" not in output, "an ANSI escape from a message reached the log"
    assert not any(line.startswith("[ERROR] [1700000000") for line in output.splitlines()), "a forged log line"
    assert "unsupported_format: compressed format 'h264\\n[ERROR] [1700000000" in output
    assert_one_contiguous_stream(units)
    whole = [u for u in units if u.end_ns <= T0 + 60 * TICK]
    assert len(whole) >= 5 and all(u.repeated_frames == 0 and u.audio_coverage == 1.0 for u in whole)
    assert_frames_match_their_stamps(units)
    assert all(u.frame_id == "camera" for u in units)


def test_frozen_audio_stamps_keep_memory_bounded_and_the_stream_recovers():
    """F8 (b): every audio chunk with the same header stamp once grew the reorder queue without
    bound. 1-s chunks at 48 kHz (192 KB each) with one frozen stamp: the queue keeps at most
    max_delay + modality_timeout + unit_duration of audio, the rest is counted as
    errors.audio_backlog; stamps that move again give whole units."""
    sync = start_node("synchronizer", "/sa5", "qos.audio.reliability:=reliable", "qos.audio.depth:=20",
                      "qos.image.reliability:=reliable", "qos.image.depth:=200",
                      "qos.audio_info.reliability:=reliable", "diagnostics_period:=0.5")
    rate = 48_000
    chunks = 400  # 77 MB of audio that used to stay queued
    try:
        with ros_context() as (context, executor):
            rig = Rig(context, executor, "/sa5")
            rig.ready(sync)
            rig.info.publish(audio_info(rate=rate))
            assert wait_until(lambda: rig.value("audio_rate_hz", None) is not None, 20, executor)
            before = peak_rss_kb(sync.pid)
            frozen = audio(T0, tone(0, rate, rate).tobytes())
            for i in range(chunks):
                rig.audio.publish(frozen)
                if i % 20 == 0:
                    rig.info.publish(audio_info(rate=rate))
                rig.pace()
            def dropped_chunks():
                return rig.value("assembler.audio_chunks_duplicate", 0) + rig.value("assembler.audio_chunks_backlog_dropped", 0)

            dropped = wait_until(lambda: dropped_chunks() >= chunks // 2 and rig.value("errors.audio_backlog") > 0,
                                 30, executor)
            backlog = dropped_chunks()
            after = peak_rss_kb(sync.pid)
            for k in range(50):  # the driver's clock works again, a camera comes up
                rig.tick(k, rate=rate, origin=T0 + 100 * S)
                rig.pace()
            recovered = wait_until(lambda: sum(unit_from_msg(u).start_ns >= T0 + 100 * S for u in rig.units) >= 3,
                                   30, executor)
            units = rig.decoded()
    finally:
        output = stop_process(sync)
    assert dropped, (backlog, output[-3000:])
    growth_mb = (after - before) / 1024
    print(f"frozen audio stamp: {backlog} chunks dropped, peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MB")
    assert growth_mb < 40, f"peak RSS grew {growth_mb:.0f} MB while audio stamps were frozen"
    assert recovered, output[-3000:]
    fresh = [u for u in units if u.start_ns >= T0 + 100 * S and u.end_ns <= T0 + 105 * S]
    assert fresh[0].stream_restart and [u.index for u in fresh] == list(range(len(fresh)))
    assert all(u.audio_coverage == 1.0 and u.repeated_frames == 0 for u in fresh)


def test_a_camera_of_the_other_image_type_is_reported_with_the_setting_to_change():
    """A raw-image synchronizer whose image topic has a CompressedImage publisher says so on
    /diagnostics, naming compressed:=true, and counts it once."""
    from sensor_msgs.msg import CompressedImage

    from reliability import Diagnostics

    sync = start_node("synchronizer", "/sw", "diagnostics_period:=0.5")
    try:
        with ros_context() as (context, executor):
            node = rclpy.create_node("wrong_camera", context=context)
            executor.add_node(node)
            diag = Diagnostics(node)
            name = "sw/synchronizer: sensor sync"
            node.create_publisher(CompressedImage, "/sw/image", 10)
            ok = wait_until(lambda: "set compressed:=true" in str(diag.get(name, "_message", "")), 60, executor)
            wait_until(lambda: False, 1.5, executor)  # a few more diagnostics periods: counted once
            errors = diag.errors(name)
            message = diag.get(name, "_message", "")
            node.destroy_node()
    finally:
        output = stop_process(sync)
    assert ok, (message, output[-2000:])
    assert "topic /sw/image has a publisher of type sensor_msgs/msg/CompressedImage" in message
    assert errors == {"wrong_topic_type": 1}, errors
    assert output.count("wrong_topic_type") == 1, output[-2000:]
