"""Start node processes and interrupt them at random moments (while loading, while idle, in the
middle of a unit), with their inputs flowing: shared by tests/test_shutdown.py (no traceback, a
clean exit) and bench/bench_shutdown.py (how long the exit takes)."""
from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from engine_fixtures import make_unit
from reliability import start_node
from roma_ros.msg import MultimodalUnit
from roma_ros.pipeline.convert import unit_to_msg
from rosutil import ros_context, wait_until
from sensor_publishers import frame_colour

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
S = 1_000_000_000


@dataclass
class Interrupted:
    kind: str
    signal: str
    after_s: float  # from the process start to the signal
    ready: bool  # the node had subscribed to its input when it was interrupted
    exit_s: float  # from the signal to the process's end
    returncode: int
    output: str


class Feeder:
    """Publishes the input of every running node: units to engines, camera and mic messages to
    synchronizers, at 20 Hz, from one background thread."""

    def __init__(self, node):
        from audio_common_msgs.msg import AudioDataStamped
        from sensor_msgs.msg import Image

        self.node, self.Image, self.Audio = node, Image, AudioDataStamped
        self.publishers: dict[str, list] = {}
        self.rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def add(self, kind: str, namespace: str) -> list:
        if kind == "engine":
            pubs = [self.node.create_publisher(MultimodalUnit, f"{namespace}/units", QOS)]
        else:
            pubs = [self.node.create_publisher(self.Image, f"{namespace}/image", QOS),
                    self.node.create_publisher(self.Audio, f"{namespace}/audio", QOS)]
        with self._lock:
            self.publishers[namespace] = [kind, pubs, 0]
        return pubs

    def remove(self, namespace: str) -> None:
        with self._lock:
            _, pubs, _ = self.publishers.pop(namespace)
        for pub in pubs:
            self.node.destroy_publisher(pub)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        while not self._stop.wait(0.05):
            with self._lock:
                targets = list(self.publishers.values())
            for entry in targets:
                kind, pubs, tick = entry
                entry[2] += 1
                try:
                    if kind == "engine":
                        if tick % 4 == 0:  # 5 units a second: one is usually in progress
                            pubs[0].publish(unit_to_msg(make_unit(tick // 4, self.rng)))
                    else:
                        stamp = 1000 * S + tick * S // 20
                        pubs[0].publish(self._image(stamp))
                        pubs[1].publish(self._audio(stamp))
                except Exception:  # a publisher destroyed meanwhile
                    pass

    def _image(self, stamp_ns: int):
        msg = self.Image(height=48, width=64, encoding="rgb8", step=64 * 3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, S)
        msg.data = np.full((48, 64, 3), frame_colour(stamp_ns), np.uint8).tobytes()
        return msg

    def _audio(self, stamp_ns: int):
        msg = self.Audio()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, S)
        msg.audio.data = np.zeros(800, "<i2").tobytes()
        return msg


def interrupt_at_random(kind: str, runs: int, params: list[str], seed: int = 0, at_most_s: float = 4.0,
                        concurrent: int = 4) -> list[Interrupted]:
    """Start `runs` processes of `kind` (`concurrent` at a time), feed them, and send each SIGINT
    or SIGTERM (alternating): half at a random moment within at_most_s of the start, half within
    a second of the node subscribing to its input."""
    rng = random.Random(seed)
    results: list[Interrupted] = []
    with ros_context() as (context, executor):
        node = rclpy.create_node("shutdown_stress", context=context)
        executor.add_node(node)
        feeder = Feeder(node).start()
        try:
            for batch_start in range(0, runs, concurrent):
                batch = []
                for i in range(batch_start, min(runs, batch_start + concurrent)):
                    namespace = f"/stop{i}"
                    pubs = feeder.add(kind, namespace)
                    proc = start_node(kind, namespace, *params)
                    batch.append((i, namespace, pubs, proc, time.monotonic(), rng.uniform(0.5, at_most_s)))
                for i, namespace, pubs, proc, started, delay in sorted(batch, key=lambda b: b[-1]):
                    if i % 4 >= 2:  # half of them once they run (input flowing, mid-unit likely)
                        wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 120, executor)
                        at = time.monotonic() + delay / at_most_s
                        wait_until(lambda: time.monotonic() >= at, 5, executor)
                    else:  # the others at any moment from the start (imports, model loading, ...)
                        wait_until(lambda: time.monotonic() - started >= delay, delay + 1, executor)
                    ready = all(p.get_subscription_count() > 0 for p in pubs)
                    sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
                    sent = time.monotonic()
                    proc.send_signal(sig)
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    exit_s = time.monotonic() - sent
                    feeder.remove(namespace)
                    results.append(Interrupted(kind, sig.name, time.monotonic() - started - exit_s, ready,
                                               exit_s, proc.returncode, proc.stdout.read()))
        finally:
            feeder.stop()
            node.destroy_node()
    return results
