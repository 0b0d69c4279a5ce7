"""Publish a rosbag2 bag on its topics in (scaled) real time, optionally with /clock.

For graphs without rosbag2 (our PyPI-wheel setup). Messages are forwarded as the CDR bytes stored
in the bag, never deserialized, so playback costs almost nothing per message. Time in the bag is
its log time (receive time at recording); with --clock, /clock carries it, so nodes started with
use_sim_time follow the bag.
"""
from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosgraph_msgs.msg import Clock

from roma_ros.bagio import BagError, open_bag, read_messages
from roma_ros.pipeline.typestore import rclpy_message_class

try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - older rclpy
    RCLError = RuntimeError


@dataclass
class PlaybackStats:
    published: dict[str, int] = field(default_factory=dict)
    publish_errors: int = 0
    skipped_topics: dict[str, str] = field(default_factory=dict)
    loops: int = 0
    wall_seconds: float = 0.0
    bag_seconds: float = 0.0
    unacknowledged_topics: list[str] = field(default_factory=list)  # reliable data not confirmed at the end


def parse_remaps(remaps: list[str]) -> dict[str, str]:
    """['/a:=/b', ...] -> {'/a': '/b'}."""
    table = {}
    for remap in remaps:
        if ":=" not in remap:
            raise ValueError(f"remap {remap!r} must look like /from:=/to")
        source, target = remap.split(":=", 1)
        table[source] = target
    return table


class BagPlayer:
    """Plays one bag through publishers of `node`. Call run() from the thread that owns timing;
    the node needs no spinning (publishers only)."""

    def __init__(
        self,
        node: Node,
        bag: Path,
        rate: float = 1.0,
        loop: bool = False,
        clock: bool = False,
        clock_hz: float = 50.0,
        topics: list[str] | None = None,
        remaps: dict[str, str] | None = None,
        qos_depth: int = 100,
        clock_tail: float = 0.0,
    ):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.node = node
        self.bag = Path(bag)
        self.rate = rate
        self.loop = loop
        self.clock_period = 1.0 / clock_hz
        self.clock_tail = clock_tail
        self.stats = PlaybackStats()
        qos = QoSProfile(depth=qos_depth, reliability=QoSReliabilityPolicy.RELIABLE)
        self._clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        self._publishers = {}
        remaps = remaps or {}
        with closing(open_bag(self.bag)) as reader:
            known = {c.topic for c in reader.connections}
            for conn in reader.connections:
                if topics and conn.topic not in topics:
                    continue
                try:
                    msg_class = rclpy_message_class(conn.msgtype)
                except ImportError:
                    self.stats.skipped_topics[conn.topic] = f"{conn.msgtype} is not installed here"
                    continue
                except Exception as exc:  # noqa: BLE001 - a type name no message class can have
                    self.stats.skipped_topics[conn.topic] = str(exc)
                    continue
                if conn.topic not in self._publishers:
                    out_topic = remaps.get(conn.topic, conn.topic)
                    try:
                        self._publishers[conn.topic] = node.create_publisher(msg_class, out_topic, qos)
                    except Exception as exc:  # noqa: BLE001 - e.g. a service type recorded as a topic
                        self.stats.skipped_topics[conn.topic] = f"cannot publish {conn.msgtype} ({type(exc).__name__}: {exc})"
        for topic, reason in self.stats.skipped_topics.items():
            node.get_logger().warning(f"not playing {topic}: {reason}")
        if topics and (missing := sorted(set(topics) - known)):
            raise BagError(f"{self.bag} has no topic {', '.join(missing)}; it has {', '.join(sorted(known))}")
        if not self._publishers:
            why = "; ".join(f"{t}: {r}" for t, r in sorted(self.stats.skipped_topics.items())) or "the bag has no topics"
            raise BagError(f"nothing to play in {self.bag}: {why}")

    @property
    def topics(self) -> list[str]:
        return sorted(self._publishers)

    def wait_for_subscribers(self, topics: list[str], timeout: float) -> bool:
        """Block until each of `topics` (bag names) has a matched subscriber, or timeout."""
        pubs = [self._publishers[t] for t in topics if t in self._publishers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.02)
        return False

    def topics_without_subscribers(self, topics: list[str]) -> list[str]:
        return [t for t in topics if t in self._publishers and self._publishers[t].get_subscription_count() == 0]

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
            self._clock_pub.publish(msg)

    def _sleep_until(self, wall_target: float, wall0: float, bag0: int, stop) -> None:
        """Sleep until wall_target, publishing /clock in between."""
        while not stop():
            now = time.monotonic()
            if now >= wall_target:
                return
            self._publish_clock(bag0 + int((now - wall0) * self.rate * 1e9))
            time.sleep(min(self.clock_period, wall_target - now))

    def run(self, stop=lambda: False, tail_until=None) -> PlaybackStats:
        """Play the bag (and loop it if asked). `tail_until`, when given, ends the clock tail
        early once it returns True (e.g. when the nodes have flushed their last units); the tail
        is then at most `clock_tail` seconds of bag time."""
        started = time.monotonic()
        while not stop():
            with closing(open_bag(self.bag)) as reader:
                connections = [c for c in reader.connections if c.topic in self._publishers]
                bag0 = reader.start_time
                self.stats.bag_seconds = (reader.end_time - reader.start_time) / 1e9
                wall0 = time.monotonic()
                for conn, stamp_ns, raw in read_messages(reader, connections):
                    if stop():
                        break
                    self._sleep_until(wall0 + (stamp_ns - bag0) / 1e9 / self.rate, wall0, bag0, stop)
                    self._publish_clock(stamp_ns)
                    try:
                        self._publishers[conn.topic].publish(bytes(raw))
                    except RCLError as exc:
                        self.stats.publish_errors += 1
                        self.node.get_logger().error(
                            f"publish on {conn.topic} failed: {exc}", throttle_duration_sec=1.0
                        )
                        continue
                    self.stats.published[conn.topic] = self.stats.published.get(conn.topic, 0) + 1
            if self._clock_pub is not None and self.clock_tail > 0 and not stop():
                # Keep time moving after the last message, so nodes on sim time see their
                # inputs go silent (the synchronizer then flushes its last units).
                end_wall = time.monotonic()
                end_bag = bag0 + int((end_wall - wall0) * self.rate * 1e9)
                tail_stop = stop if tail_until is None else (lambda: stop() or tail_until())
                self._sleep_until(end_wall + self.clock_tail / self.rate, end_wall, end_bag, tail_stop)
            if not self.loop:
                break
            self.stats.loops += 1
        self.stats.unacknowledged_topics = self.flush()
        self.stats.wall_seconds = time.monotonic() - started
        return self.stats

    def flush(self, timeout: float = 5.0) -> list[str]:
        """Wait until the subscribers have acknowledged everything published (reliable QoS), so
        the last messages are not lost when the player exits right after; returns the topics
        still unconfirmed at the timeout."""
        deadline = time.monotonic() + timeout
        late = []
        for topic, publisher in self._publishers.items():
            left = max(0.0, deadline - time.monotonic())
            if not publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                late.append(topic)
        if late:
            self.node.get_logger().warning(f"subscribers did not confirm the last messages on {', '.join(late)}")
        return late
