"""synchronizer_node: camera + microphone topics -> 1-second roma_ros/MultimodalUnit messages.

    ros2 run roma_ros synchronizer_node --ros-args --params-file config/roma.yaml

Subscribes (relative names, remappable): `image` (sensor_msgs/Image) or, with `compressed:
true`, `image/compressed` (sensor_msgs/CompressedImage); `audio`
(audio_common_msgs/AudioDataStamped) and `audio_info` (audio_common_msgs/AudioInfo).
Publishes `units` (roma_ros/MultimodalUnit) and `/diagnostics`. Parameters: config/roma.yaml.

All timing comes from header stamps (roma_ros.core.assembler), so the node gives the same units
live, from a bag at any rate, and with use_sim_time. Only `modality_timeout` is measured on the
node's clock (ROS time: it follows /clock with use_sim_time), counted from the first message the
node received, so a paused bag does not time out against wall time; a stalled process does not
count its stall as silence (roma_ros.core.silence).

Cost per message: a frame costs its header and a reference (decoding happens only for the
frames_per_unit frames a unit uses); an audio chunk is decoded to mono at once (a few us).
Callbacks run on one thread (rclpy.spin's single-threaded executor): the assembler is not
thread-safe, and nothing here blocks.

Bad input (unknown encodings, truncated data, compressed audio, zero stamps, stamps off the
stream, oversized images or strings, ...) is counted per reason on /diagnostics and logged
rate-limited, as one escaped line (roma_ros.core.log_text); the node keeps running and nothing
already accepted is lost. Two things no single message shows are reported on the status too:
an input whose messages arrive but reach no unit (starved: its stamps disagree with the other
input's, or it is always late), and a publisher of the wrong message type on an input topic.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace
from typing import Callable

import rclpy
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage as CompressedImageMsg
from sensor_msgs.msg import Image as ImageMsg

from roma_ros.core.assembler import AUDIO, MODALITIES, VIDEO, AssemblerConfig, UnitAssembler
from roma_ros.core.silence import SilenceDetector
from roma_ros.core.audio_decode import AudioFormat, pcm_to_mono
from roma_ros.core.errors import DecodeError
from roma_ros.core.image_decode import check_compressed, check_raw
from roma_ros.core.log_text import loggable
from roma_ros.core.profile import FrameSizing, resolve_profile
from roma_ros.core.unit import NS_PER_S, Unit
from roma_ros.dds import apply_dds_defaults
from roma_ros.memory import map_large_buffers
from roma_ros.msg import MultimodalUnit
from roma_ros.nodes.convert import (
    audio_format_from_info,
    compressed_image_from_msg,
    raw_image_from_msg,
    stamp_to_ns,
    unit_to_msg,
)
from roma_ros.nodes.diagnostics import ERROR, OK, STALE, WARN, DiagnosticsReporter
from roma_ros.nodes.process import SHUTDOWN_EXCEPTIONS, RCLError, is_shutdown_race, quiet_cleanup, spin_until_shutdown
from roma_ros.nodes.qos import incompatible_qos_events, qos_from_parameters, qos_parameters

FORMAT_SOURCES = ("auto", "info", "parameters")
TEXT_LIMIT = 256  # characters of an outside string kept (frame_id, encoding, format)
STARVED_UNITS = 3  # units in a row without an input whose messages arrived meanwhile: WARN
STARVED_ERROR_UNITS = 10  # ... and this many: ERROR

# name -> (default, description); nested names use dots ("topics.image" is topics: image: in YAML)
PARAMETERS: dict[str, tuple[object, str]] = {
    "unit_duration": (1.0, "seconds of stream time per unit"),
    "frames_per_unit": (2, "frames sampled per unit"),
    "model_profile": ("auto", "the engine's model profile (frame sizing rule): auto | roma-release | roma-tiny | file"),
    "model_path": ("embedded", "the engine's checkpoint (auto finds its roma_profile.json there)"),
    "max_pixels": (0, "frame area limit of the profile's rule; 0 = the profile's own (65,536)"),
    "max_delay": (0.2, "seconds a message may arrive after a later-stamped one of its modality"),
    "modality_timeout": (2.0, "seconds (node clock) without messages before a modality is silent"),
    "restart_tolerance": (1.0, "backward stamp jump (s) that starts a new stream"),
    "max_forward_jump": (5.0, "forward stamp jump (s) that starts a new stream"),
    "jump_confirm_count": (3, "agreeing messages that confirm a stamp jump; fewer are outliers"),
    "audio_jitter_tolerance": (0.03, "stamp jitter (s) still treated as contiguous audio"),
    "compressed": (False, "subscribe to CompressedImage instead of Image"),
    "topics.image": ("image", "sensor_msgs/Image input"),
    "topics.compressed_image": ("image/compressed", "sensor_msgs/CompressedImage input"),
    "topics.audio": ("audio", "audio_common_msgs/AudioDataStamped input"),
    "topics.audio_info": ("audio_info", "audio_common_msgs/AudioInfo input"),
    "topics.units": ("units", "roma_ros/MultimodalUnit output"),
    "audio.format_source": ("auto", "auto | info | parameters"),
    "audio.sample_rate": (16000, "Hz, raw PCM without AudioInfo"),
    "audio.channels": (1, "interleaved channels, raw PCM without AudioInfo"),
    "audio.sample_format": ("S16LE", "raw PCM sample format without AudioInfo"),
    "audio.coding_format": ("wave", "coding without AudioInfo (only raw PCM works)"),
    **qos_parameters("qos.image", "best_effort", "volatile", 5),
    **qos_parameters("qos.audio", "best_effort", "volatile", 50),
    **qos_parameters("qos.audio_info", "best_effort", "volatile", 1),
    **qos_parameters("qos.units", "reliable", "volatile", 10),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
}


class SynchronizerPipeline:
    """Everything the node does with a message, without rclpy's node machinery (so benchmarks
    and offline tools drive the very same code): message -> core types -> assembler -> unit
    messages. Bad input raises nothing: it is counted in `counters` as errors.<reason> and
    passed to `on_error(reason, text)` (the node logs it there, rate-limited)."""

    def __init__(
        self,
        config: AssemblerConfig,
        fallback_format: AudioFormat,
        format_source: str = "auto",
        on_error: Callable[[str, str], None] | None = None,
        info_publisher_exists: Callable[[], bool] = lambda: False,
        counters: Counter | None = None,
        on_warning: Callable[[str], None] | None = None,
    ):
        if format_source not in FORMAT_SOURCES:
            raise ValueError(f"audio.format_source must be one of {FORMAT_SOURCES}")
        self.counters: Counter = Counter() if counters is None else counters
        self._on_error = on_error or (lambda reason, text: None)
        self.assembler = UnitAssembler(config, on_error=self._decode_error)
        self.starvation = Starvation()
        self.fallback_format = fallback_format
        self.format_source = format_source
        self.info_format: AudioFormat | None = None
        self._info_publisher_exists = info_publisher_exists
        self.last_unit: Unit | None = None
        self._bad_info_seen = False
        self._on_warning = on_warning or (lambda text: None)
        self._assumed_format_told = False
        # Chunks received before the first valid AudioInfo (~5 s of 20 ms chunks; oldest dropped
        # and counted beyond that).
        self._waiting_chunks: deque = deque(maxlen=250)

    def _decode_error(self, error: DecodeError) -> None:
        self.error(error.reason, str(error))

    def error(self, reason: str, text: str) -> None:
        self.counters["errors." + reason] += 1
        self._on_error(reason, text)

    def _to_msgs(self, units: list[Unit]) -> list[MultimodalUnit]:
        if units:
            self.last_unit = units[-1]
            self.counters["units_out"] += len(units)
        for unit in units:
            self.starvation.unit(unit)
        return [unit_to_msg(unit) for unit in units]

    # --- inputs ----------------------------------------------------------------------------
    def image(self, msg) -> list[MultimodalUnit]:
        return self._frame(msg, raw_image_from_msg, check_raw, ("encoding", msg.encoding))

    def compressed_image(self, msg) -> list[MultimodalUnit]:
        return self._frame(msg, compressed_image_from_msg, check_compressed, ("format", msg.format))

    def _frame(self, msg, to_payload, check, named_text) -> list[MultimodalUnit]:
        """Validate the frame's strings, header and size cheaply and hand a reference to the
        assembler; pixels are decoded only if a unit selects the frame."""
        self.counters["images_in"] += 1
        self.starvation.message(VIDEO)
        try:
            for what, text in (("frame_id", msg.header.frame_id), named_text):
                _check_text(text, what)
            payload = to_payload(msg)
            check(payload)
            units = self.assembler.add_frame(stamp_to_ns(msg.header.stamp), payload, msg.header.frame_id)
        except DecodeError as exc:
            self.error(exc.reason, str(exc))
            return []
        return self._to_msgs(units)

    def audio_info(self, msg) -> list[MultimodalUnit]:
        """A valid AudioInfo sets the format; an invalid one (compressed coding, unknown sample
        format, absurd rate or channel count) is counted and ignored: the last valid format stays,
        and before any valid one, chunks wait rather than being misread as raw PCM. Chunks that
        waited are decoded once the format is known (AudioInfo and audio are separate topics, so
        the first chunks often arrive before the first AudioInfo)."""
        self.counters["audio_info_in"] += 1
        audio_format = audio_format_from_info(msg)
        try:
            audio_format.validate()
        except DecodeError as exc:
            self._bad_info_seen = True
            self.error(exc.reason, f"AudioInfo ignored: {exc}")
            return []
        self.info_format = audio_format
        units = []
        while self._waiting_chunks:
            units += self._decode_audio(self._waiting_chunks.popleft())
        return units

    def audio_format(self) -> AudioFormat | None:
        """The format to read audio chunks with, or None to drop them (waiting for AudioInfo)."""
        if self.format_source == "parameters":
            return self.fallback_format
        if self.info_format is not None:
            return self.info_format
        if self.format_source == "info" or self._bad_info_seen or self._info_publisher_exists():
            return None
        if not self._assumed_format_told:  # without AudioInfo a 48 kHz stereo mic would be misread
            self._assumed_format_told = True
            self.counters["audio_format_assumed"] += 1
            fmt = self.fallback_format
            self._on_warning(
                f"no AudioInfo on the audio_info topic: reading audio as {fmt.sample_format}, {fmt.sample_rate} Hz, "
                f"{fmt.channels} channel(s). If the microphone differs, publish or remap its AudioInfo "
                "(audio_info:=...) or set audio.sample_rate, audio.channels and audio.sample_format "
                "(with audio.format_source: parameters)")
        return self.fallback_format

    def audio(self, msg) -> list[MultimodalUnit]:
        self.counters["audio_chunks_in"] += 1
        self.starvation.message(AUDIO)
        return self._decode_audio(msg)

    def _decode_audio(self, msg) -> list[MultimodalUnit]:
        audio_format = self.audio_format()
        if audio_format is None:
            if len(self._waiting_chunks) == self._waiting_chunks.maxlen:
                self.counters["audio_chunks_dropped_waiting_for_info"] += 1
            self._waiting_chunks.append(msg)
            self.counters["audio_chunks_waiting_for_info"] += 1
            return []
        try:
            samples, nonfinite = pcm_to_mono(msg.audio.data, audio_format)
            if nonfinite:
                self.counters["audio_nonfinite_samples"] += nonfinite
                self.error("nonfinite_audio", f"{nonfinite} non-finite audio samples replaced by silence")
            units = self.assembler.add_audio(stamp_to_ns(msg.header.stamp), samples, audio_format.sample_rate)
        except DecodeError as exc:
            self.error(exc.reason, str(exc))
            return []
        return self._to_msgs(units)

    def mark_silent(self, modality: str) -> list[MultimodalUnit]:
        return self._to_msgs(self.assembler.mark_silent(modality))


def _image_type_hint(expected: str, found: str) -> str:
    """What to set when a camera publishes the other image type on the topic we read."""
    if expected.endswith("/Image") and found.endswith("/CompressedImage"):
        return (": set compressed:=true (it reads CompressedImage on image/compressed; remap "
                "image/compressed to this topic if it has no /compressed suffix)")
    if expected.endswith("/CompressedImage") and found.endswith("/Image"):
        return ": set compressed:=false to read raw sensor_msgs/Image (remap image to this topic)"
    return ""


def _check_text(text: str, what: str) -> None:
    if len(text) > TEXT_LIMIT:
        raise DecodeError("text_too_long", f"{what} of {len(text)} characters (limit {TEXT_LIMIT}): "
                                           f"'{loggable(text, 40)}'")


class Starvation:
    """Inputs whose messages keep arriving while the units carry none of them: stamps that the
    timeline rejects (another clock, a frozen or forged stamp), or messages always too late.
    No counter of rejected messages says this on its own, so the status names the input.

    Per input, `units[m]` counts the units in a row that lacked m (no real frame / no real audio)
    although messages of m arrived since the unit before; a unit with m, or one before which no
    m arrived (a silent or slow input), starts the count again."""

    def __init__(self):
        self.arrived = {m: 0 for m in MODALITIES}
        self.units = {m: 0 for m in MODALITIES}

    def message(self, modality: str) -> None:
        self.arrived[modality] += 1

    def unit(self, unit: Unit) -> None:
        present = {VIDEO: unit.repeated_frames < len(unit.frames), AUDIO: unit.audio_coverage > 0}
        for modality, has in present.items():
            starving = not has and self.arrived[modality] > 0
            self.units[modality] = self.units[modality] + 1 if starving else 0
            self.arrived[modality] = 0

    def starved(self) -> dict[str, int]:
        """Starved inputs -> units in a row without them."""
        return {m: n for m, n in self.units.items() if n >= STARVED_UNITS}


def frame_sizing(p: Callable[[str], object]) -> FrameSizing:
    """The frame rule of the model profile the engine will use (same parameters, same answer)."""
    from roma_ros.engine.factory import EMBEDDED, embedded_model_path

    model_path = str(p("model_path"))
    embedded = model_path in ("", EMBEDDED)
    path = str(embedded_model_path()) if embedded else model_path
    sizing = resolve_profile(str(p("model_profile")), path, embedded=embedded).frames
    if int(p("max_pixels")) > 0:
        sizing = replace(sizing, max_pixels=int(p("max_pixels")))
    return sizing.validate()


def synchronizer_settings(p: Callable[[str], object], sizing: FrameSizing | None = None
                          ) -> tuple[AssemblerConfig, AudioFormat]:
    """Assembler settings and the raw-PCM audio format from parameter values (`p(name)`):
    the node and the offline evaluator build the very same pipeline from one YAML file.
    `sizing`: the engine's frame rule when the caller already holds its profile."""
    sizing = sizing or frame_sizing(p)
    config = AssemblerConfig(
        unit_duration=float(p("unit_duration")),
        frames_per_unit=int(p("frames_per_unit")),
        max_pixels=sizing.max_pixels,
        frame_rule=sizing.rule,
        max_delay=float(p("max_delay")),
        modality_timeout=float(p("modality_timeout")),
        restart_tolerance=float(p("restart_tolerance")),
        max_forward_jump=float(p("max_forward_jump")),
        jump_confirm_count=int(p("jump_confirm_count")),
        audio_jitter_tolerance=float(p("audio_jitter_tolerance")),
    )
    fallback = AudioFormat(
        sample_rate=int(p("audio.sample_rate")),
        channels=int(p("audio.channels")),
        sample_format=str(p("audio.sample_format")),
        coding_format=str(p("audio.coding_format")),
    )
    return config, fallback


class SynchronizerNode(Node):
    """The ROS wrapper: parameters, QoS, subscriptions, the units publisher, diagnostics and
    the modality_timeout check."""

    def __init__(self, **kwargs):
        super().__init__("synchronizer", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default)
        p = self._param
        config, fallback = synchronizer_settings(p)
        self.diagnostics = DiagnosticsReporter(
            self, "sensor sync", status=self._status, period=float(p("diagnostics_period"))
        )
        info_topic = str(p("topics.audio_info"))
        self._info_topic = info_topic
        self._wrong_types_seen: set[tuple[str, str]] = set()
        self._info_check_ns = None
        self._info_publisher_seen = False
        self.pipeline = SynchronizerPipeline(
            config,
            fallback,
            format_source=str(p("audio.format_source")),
            on_error=self.diagnostics.log_throttled,
            info_publisher_exists=self._info_publisher_exists,
            counters=self.diagnostics.counters,
            on_warning=self.get_logger().warning,
        )
        self._silence = SilenceDetector(MODALITIES, int(config.modality_timeout * NS_PER_S))

        diag = self.diagnostics
        units_topic = str(p("topics.units"))
        self._units_pub = self.create_publisher(MultimodalUnit, units_topic, qos_from_parameters(self, "qos.units"),
                                                event_callbacks=incompatible_qos_events(diag, units_topic, publisher=True))
        if p("compressed"):
            topic = str(p("topics.compressed_image"))
            self.create_subscription(CompressedImageMsg, topic, self._on_compressed_image,
                                     qos_from_parameters(self, "qos.image"),
                                     event_callbacks=incompatible_qos_events(diag, topic))
        else:
            topic = str(p("topics.image"))
            self.create_subscription(ImageMsg, topic, self._on_image, qos_from_parameters(self, "qos.image"),
                                     event_callbacks=incompatible_qos_events(diag, topic))
        self.create_subscription(AudioDataStamped, str(p("topics.audio")), self._on_audio,
                                 qos_from_parameters(self, "qos.audio"),
                                 event_callbacks=incompatible_qos_events(diag, str(p("topics.audio"))))
        self.create_subscription(AudioInfo, info_topic, self._on_audio_info, qos_from_parameters(self, "qos.audio_info"),
                                 event_callbacks=incompatible_qos_events(diag, info_topic))
        self.create_timer(min(0.1, config.modality_timeout / 4), self._check_silence)

        for counter, rate in (("images_in", "image_rate_hz"), ("audio_chunks_in", "audio_rate_hz"),
                              ("units_out", "unit_rate_hz")):
            self.diagnostics.track_rate(counter, rate)
        image_topic = self.resolve_topic_name(str(p("topics.compressed_image" if p("compressed") else "topics.image")))
        image_type = CompressedImageMsg if p("compressed") else ImageMsg
        self._input_types = {
            image_topic: _type_name(image_type),
            self.resolve_topic_name(str(p("topics.audio"))): _type_name(AudioDataStamped),
            self.resolve_topic_name(info_topic): _type_name(AudioInfo),
        }
        self.get_logger().info(
            f"synchronizing {image_topic} + {self.resolve_topic_name(str(p('topics.audio')))} -> "
            f"{self.resolve_topic_name(str(p('topics.units')))} ({config.unit_duration} s units, "
            f"{config.frames_per_unit} frames sized by the {config.frame_rule} rule (<= {config.max_pixels} px), "
            f"max_delay {config.max_delay} s)"
        )

    def _param(self, name: str):
        return self.get_parameter(name).value

    # --- callbacks -------------------------------------------------------------------------
    def _arrived(self, modality: str) -> None:
        self._silence.arrived(modality, self.get_clock().now().nanoseconds)

    def _on_image(self, msg) -> None:
        self._arrived(VIDEO)
        self._publish(self.pipeline.image(msg))

    def _on_compressed_image(self, msg) -> None:
        self._arrived(VIDEO)
        self._publish(self.pipeline.compressed_image(msg))

    def _on_audio_info(self, msg) -> None:
        self._publish(self.pipeline.audio_info(msg))

    def _on_audio(self, msg) -> None:
        self._arrived(AUDIO)
        self._publish(self.pipeline.audio(msg))

    def _check_silence(self) -> None:
        for modality in self._silence.check(self.get_clock().now().nanoseconds):
            if modality not in self.pipeline.assembler.silent:
                self._publish(self.pipeline.mark_silent(modality))

    def _info_publisher_exists(self) -> bool:
        """Whether anyone publishes audio_info (graph lookups at most once a second)."""
        now = self.get_clock().now().nanoseconds
        if self._info_check_ns is None or abs(now - self._info_check_ns) >= NS_PER_S:
            self._info_check_ns = now
            self._info_publisher_seen = self.count_publishers(self._info_topic) > 0
        return self._info_publisher_seen

    def _publish(self, msgs: list[MultimodalUnit]) -> None:
        for msg in msgs:
            try:
                self._units_pub.publish(msg)
            except RCLError as exc:
                self.diagnostics.error("publish_failed", str(exc))

    # --- diagnostics -----------------------------------------------------------------------
    def _wrong_type_publishers(self) -> list[str]:
        """"topic X has a publisher of type Y, expected Z" for each input topic with one (a graph
        lookup per input topic, once per diagnostics period; each new pair is also counted and
        logged once as errors.wrong_topic_type)."""
        problems = []
        for topic, expected in self._input_types.items():
            for info in self.get_publishers_info_by_topic(topic):
                if info.topic_type == expected:
                    continue
                problem = (f"topic {topic} has a publisher of type {loggable(info.topic_type, 80)}, "
                           f"expected {expected}{_image_type_hint(expected, info.topic_type)}")
                problems.append(problem)
                if (topic, info.topic_type) not in self._wrong_types_seen:
                    self._wrong_types_seen.add((topic, info.topic_type))
                    self.diagnostics.error("wrong_topic_type", problem)
        return problems

    def _status(self, diag: DiagnosticsReporter) -> tuple[bytes, str]:
        pipeline = self.pipeline
        for key, value in pipeline.assembler.stats.items():
            diag.values[f"assembler.{key}"] = value
        unit = pipeline.last_unit
        if unit is not None:
            diag.set("last_unit_index", unit.index)
            diag.set("last_unit_audio_coverage", round(unit.audio_coverage, 4))
            diag.set("last_unit_repeated_frames", unit.repeated_frames)
            diag.set("last_unit_latency_s", (self.get_clock().now().nanoseconds - unit.end_ns) / NS_PER_S)
        silent = sorted(pipeline.assembler.silent)
        diag.set("silent_inputs", ",".join(silent) or "none")
        diag.set("clock_stalls", self._silence.stalls)
        starved = pipeline.starvation.starved()
        diag.set("starved_inputs", ",".join(sorted(starved)) or "none")
        wrong_types = self._wrong_type_publishers()
        diag.set("wrong_type_publishers", len(wrong_types))
        if not self._silence.started or len(silent) == len(MODALITIES):
            return (WARN, "; ".join(wrong_types)) if wrong_types else (STALE, "no camera or microphone messages")
        problems = [f"{m} arrives but reaches no unit ({n} units in a row; its stamps are off the "
                    f"stream or late: see errors.stamp_outlier, assembler.{m}_stale, frames_late)"
                    for m, n in sorted(starved.items())]
        problems += wrong_types
        if silent:
            problems.append(f"no {' or '.join(silent)} messages")
        if diag.new_errors():
            problems.append(f"{diag.new_errors()} bad inputs")
        if unit is not None and unit.audio_coverage < 0.9 and AUDIO not in starved:
            problems.append(f"audio coverage {unit.audio_coverage:.2f}")
        if any(n >= STARVED_ERROR_UNITS for n in starved.values()):
            return ERROR, "; ".join(problems)
        return (WARN, "; ".join(problems)) if problems else (OK, "ok")


def _type_name(msg_type) -> str:
    """sensor_msgs.msg.Image -> "sensor_msgs/msg/Image" (how the graph names types)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def main(args=None) -> int:
    apply_dds_defaults()
    map_large_buffers()
    rclpy.init(args=args)
    node = None
    executor = None
    try:
        node = SynchronizerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_until_shutdown(executor)
    except (*SHUTDOWN_EXCEPTIONS, RCLError) as exc:  # a signal while the node was being built
        if not is_shutdown_race(exc, rclpy.get_default_context()):
            raise
    finally:
        steps = [node.destroy_node] if node is not None else []
        if executor is not None:
            steps.append(executor.shutdown)
        quiet_cleanup(*steps, rclpy.try_shutdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
