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

import rclpy
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage as CompressedImageMsg
from sensor_msgs.msg import Image as ImageMsg

from roma_ros.core.assembler import MODALITIES, VIDEO
from roma_ros.core.log_text import loggable
from roma_ros.core.silence import SilenceDetector
from roma_ros.core.unit import NS_PER_S
from roma_ros.dds import apply_dds_defaults
from roma_ros.memory import map_large_buffers
from roma_ros.msg import MultimodalUnit
from roma_ros.nodes.diagnostics import ERROR, OK, STALE, WARN, DiagnosticsReporter
from roma_ros.nodes.process import SHUTDOWN_EXCEPTIONS, RCLError, is_shutdown_race, quiet_cleanup, spin_until_shutdown
from roma_ros.nodes.qos import incompatible_qos_events, qos_from_parameters
from roma_ros.pipeline.synchronizer import (
    AUDIO,
    PARAMETERS,
    STARVED_ERROR_UNITS,
    SynchronizerPipeline,
    synchronizer_settings,
)

def _image_type_hint(expected: str, found: str) -> str:
    """What to set when a camera publishes the other image type on the topic we read."""
    if expected.endswith("/Image") and found.endswith("/CompressedImage"):
        return (": set compressed:=true (it reads CompressedImage on image/compressed; remap "
                "image/compressed to this topic if it has no /compressed suffix)")
    if expected.endswith("/CompressedImage") and found.endswith("/Image"):
        return ": set compressed:=false to read raw sensor_msgs/Image (remap image to this topic)"
    return ""




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
