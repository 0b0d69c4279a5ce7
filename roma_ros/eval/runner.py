"""Replay one rosbag2 bag through the synchronizer and engine code of the nodes, without DDS.

The bag's messages are deserialized into the same rclpy message objects the nodes receive and go
through the same SynchronizerPipeline and StreamSession, in log-time order, as fast as the model
allows. So a bag gives the same units, probabilities and alerts here as through the live graph.

Topics: the image topic (sensor_msgs/Image or CompressedImage), the audio topic
(audio_common_msgs/AudioDataStamped) and the AudioInfo topic are found by type unless named;
other topics are ignored. At the end of the bag, what the synchronizer still holds is flushed
(as if both inputs had gone silent).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from roma_ros.bagio import BagError, open_bag, read_messages
from roma_ros.core.assembler import AUDIO, VIDEO
from roma_ros.core.triggers import TriggerRule
from roma_ros.eval.annotations import Annotations
from roma_ros.pipeline.typestore import typestore
from roma_ros.eval.records import AlertRecord, BagResult, ReplyRecord, UnitRecord
from roma_ros.pipeline.convert import stamp_to_ns, unit_from_msg
from roma_ros.core.unit import NS_PER_S as NS

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
AUDIO_TYPE = "audio_common_msgs/msg/AudioDataStamped"
INFO_TYPE = "audio_common_msgs/msg/AudioInfo"


@dataclass
class TopicChoice:
    image: str | None = None
    audio: str | None = None
    audio_info: str | None = None


@dataclass
class RunOptions:
    topics: TopicChoice = field(default_factory=TopicChoice)
    origin_s: float | None = None  # overrides the annotation's origin
    on_unit: Callable | None = None  # on_unit(unit, step) after the session processed each unit


def _pick(connections, wanted: str | None, types: tuple[str, ...], role: str) -> tuple[str, str] | None:
    by_topic = {c.topic: c.msgtype for c in connections}
    if wanted:
        if wanted not in by_topic:
            raise BagError(f"no {role} topic {wanted!r}; the bag has {sorted(by_topic)}")
        if by_topic[wanted] not in types:
            raise BagError(f"{wanted} is {by_topic[wanted]}, not {' or '.join(types)}")
        return wanted, by_topic[wanted]
    matches = sorted((t, m) for t, m in by_topic.items() if m in types)
    return matches[0] if matches else None


def checked_deserialize(raw, msgtype: str):
    """The message from CDR bytes, by rosbags' Python deserializer (it raises on garbage, where
    rclpy's C deserializer has crashed the process). Its messages have the rclpy classes' field
    names, and their byte arrays are views of `raw`: no copy of the frames."""
    return typestore().deserialize_cdr(raw, msgtype)


def _earliest_stamp_ns(reader, topics: set[str], window_ns: int = 2 * NS) -> int | None:
    """The earliest header stamp among the sensor messages of the bag's first seconds (messages
    that do not decode are skipped here; the replay counts them)."""
    earliest = None
    connections = [c for c in reader.connections if c.topic in topics]
    for conn, log_ns, raw in read_messages(reader, connections):
        if log_ns > reader.start_time + window_ns:
            break
        try:
            msg = checked_deserialize(raw, conn.msgtype)
        except Exception:  # noqa: BLE001 - any decoding failure: not a usable stamp
            continue
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp > 0 and (earliest is None or stamp < earliest):
            earliest = stamp
    return earliest


def topic_roles(reader, topics: TopicChoice) -> dict[str, str]:
    """topic -> image | compressed_image | audio | audio_info for the bag's replayed topics."""
    image = _pick(reader.connections, topics.image, IMAGE_TYPES, "image")
    audio = _pick(reader.connections, topics.audio, (AUDIO_TYPE,), "audio")
    info = _pick(reader.connections, topics.audio_info, (INFO_TYPE,), "audio info")
    if image is None and audio is None:
        raise BagError(f"no camera or microphone topic (sensor_msgs/Image, CompressedImage or "
                       f"{AUDIO_TYPE}); the bag has {sorted(c.topic for c in reader.connections)}")
    roles = {}
    for choice, role in ((image, "image"), (audio, "audio"), (info, "audio_info")):
        if choice is not None:
            topic, msgtype = choice
            if role == "image" and msgtype.endswith("CompressedImage"):
                role = "compressed_image"
            roles[topic] = role
    return roles


def check_bag(bag: Path, topics: TopicChoice | None = None) -> None:
    """BagError, with the replay's message, when `bag` cannot be opened or has nothing to replay."""
    reader = open_bag(Path(bag))
    try:
        topic_roles(reader, topics or TopicChoice())
    finally:
        reader.close()


def run_bag(bag: Path, build_pipeline: Callable[[], object], session, annotations: Annotations | None = None,
            default_rule: TriggerRule | None = None, options: RunOptions | None = None,
            progress: Callable[[int, float], None] | None = None) -> BagResult:
    """Replay `bag`. `build_pipeline()` returns a SynchronizerPipeline; `session` is a fresh
    StreamSession. Annotated tasks are set when stream time reaches their ask_time (with their
    rule overrides on top of `default_rule`); annotated questions are asked at their times.
    `progress(units, stream_seconds)` is called after every unit."""
    bag = Path(bag)
    options = options or RunOptions()
    reader = open_bag(bag)
    try:
        roles = topic_roles(reader, options.topics)
        origin_s = options.origin_s
        if origin_s is None and annotations is not None:
            origin_s = annotations.origin
        if origin_s is None:
            first = _earliest_stamp_ns(reader, {t for t, r in roles.items() if r != "audio_info"})
            origin_s = (first or reader.start_time) / NS
        origin_ns = round(origin_s * NS)
        result = BagResult(name=bag.name, origin=origin_s,
                           meta={"topics": {r: t for t, r in roles.items()}})
        pending_tasks = sorted(annotations.tasks, key=lambda t: t.ask_time) if annotations else []
        rule = default_rule or TriggerRule()
        if annotations:
            for query in annotations.queries:
                session.ask(query.text, query.id, origin_ns + round(query.time * NS))
        pipeline = build_pipeline()
        started = time.perf_counter()

        def rel(ns: int) -> float:
            return (ns - origin_ns) / NS

        def consume(unit_msgs) -> None:
            for msg in unit_msgs:
                unit = unit_from_msg(msg)
                while pending_tasks and rel(unit.end_ns) > pending_tasks[0].ask_time:
                    task = pending_tasks.pop(0)
                    session.set_task(task.id, task.instruction, task.mode,
                                     rule.threshold if task.threshold is None else task.threshold,
                                     rule.window if task.window is None else task.window,
                                     rule.cooldown_s if task.cooldown is None else task.cooldown)
                step = session.process(unit)
                if options.on_unit is not None:
                    options.on_unit(unit, step)
                result.units.append(UnitRecord(unit.index, rel(unit.start_ns), rel(unit.end_ns),
                                               step.probability, [t.task_id for t in step.triggers],
                                               restart=unit.stream_restart, task_probs=dict(step.task_probs)))
                for trigger in step.triggers:
                    task = session.tasks.get(trigger.task_id)
                    text = next((a.text for a in step.alerts if a.task_id == trigger.task_id), "")
                    result.alerts.append(AlertRecord(trigger.task_id, rel(trigger.time_ns), trigger.unit_index,
                                                     trigger.prob, rel(trigger.window_start_ns),
                                                     text or task.instruction, trigger.mode))
                for stamped in step.chunks:
                    chunk = stamped.chunk
                    result.replies.append(ReplyRecord(chunk.query_id, rel(stamped.time_ns), chunk.text,
                                                      chunk.final, unit.index))
                    result.answers[chunk.query_id] = result.answers.get(chunk.query_id, "") + chunk.text
                if progress is not None:
                    progress(len(result.units), rel(unit.end_ns))

        handlers = {"image": pipeline.image, "compressed_image": pipeline.compressed_image,
                    "audio": pipeline.audio, "audio_info": pipeline.audio_info}
        connections = [c for c in reader.connections if c.topic in roles]
        try:
            for conn, _log_ns, raw in read_messages(reader, connections):
                role = roles[conn.topic]
                try:
                    msg = checked_deserialize(raw, conn.msgtype)
                except Exception as exc:
                    pipeline.error("deserialize", f"{conn.topic}: {exc}")
                    continue
                out = handlers[role](msg)
                if out:
                    consume(out)
        except BagError:
            raise
        except Exception as exc:  # corrupt chunks surface here from the storage layer
            raise BagError(f"reading stopped at a corrupt record: {type(exc).__name__}: {exc}") from exc
        consume(pipeline.mark_silent(VIDEO) + pipeline.mark_silent(AUDIO))  # tail fragments left out
        if pipeline.counters["tail_fragments_dropped"]:
            result.meta["tail_fragments_dropped"] = pipeline.counters["tail_fragments_dropped"]
        result.wall_s = time.perf_counter() - started
        result.duration_s = (max(u.end_s for u in result.units) - min(u.start_s for u in result.units)
                             if result.units else 0.0)
        result.meta["input_errors"] = {k: v for k, v in pipeline.counters.items() if k.startswith("errors.")}
        return result
    finally:
        reader.close()
