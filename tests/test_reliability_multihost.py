"""Multi-host: the synchronizer (with the sensors) and the engine (with a listener) in two network
namespaces joined by a veth pair, talking Fast DDS over UDPv4 only (no shared memory: nothing
but the veth link connects them). Units cross the link, scores and alerts come back; the link is
cut and restored, and the flow recovers without restarting any node.

Needs CAP_NET_ADMIN (root) for `ip netns` / veth; skips with the reason otherwise. Only the
namespaces created here carry traffic; they are deleted at the end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint

REPO = Path(__file__).resolve().parent.parent
TESTS = str(REPO / "tests")
CUT_SECONDS = 8.0
PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>udp_only</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="multihost" is_default_profile="true">
      <rtps>
        <userTransports><transport_id>udp_only</transport_id></userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
        <builtin>
          <initialPeersList>
            <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
            <locator><udpv4><address>{peer}</address></udpv4></locator>
          </initialPeersList>
        </builtin>
      </rtps>
    </participant>
  </profiles>
</dds>
"""
LISTENER = """
import json, time, rclpy
from roma_ros.client import ALERT_QOS
from diagnostic_msgs.msg import DiagnosticArray
from roma_ros.msg import Alert, SpeakScore
rclpy.init()
node = rclpy.create_node("multihost_listener")
out = lambda kind, m: print(json.dumps({"t": time.monotonic(), kind: m.unit_index}), flush=True)
node.create_subscription(SpeakScore, "/mh/speak_score", lambda m: out("score", m), 50)
node.create_subscription(Alert, "/mh/alert", lambda m: out("alert", m), ALERT_QOS)
def diag(msg):
    for st in msg.status:
        if st.name == "mh/engine: engine":
            values = {kv.key: kv.value for kv in st.values}
            counts = {k: int(values.get(k, 0)) for k in ("units_in", "units_processed", "units_dropped", "queue_depth")}
            print(json.dumps({"t": time.monotonic(), "engine": counts}), flush=True)
        elif st.name.startswith("mh/synchronizer"):  # crossed the link: says whether discovery did
            values = {kv.key: kv.value for kv in st.values}
            counts = {k: values.get(k) for k in ("images_in", "audio_chunks_in", "units_out")}
            print(json.dumps({"t": time.monotonic(), "synchronizer": counts}), flush=True)
node.create_subscription(DiagnosticArray, "/diagnostics", diag, 50)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    pass
"""
SENSOR = ("import sys; sys.path.insert(0, {tests!r}); import sensor_publishers as s; "
          "s.{fn}(seconds={seconds}, topic='/mh/{topic}', {extra})")


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


class Netns:
    def __init__(self):
        tag = os.getpid() % 10000
        self.a, self.b = f"roma_a{tag}", f"roma_b{tag}"
        self.veth_a, self.veth_b = f"vroa{tag}", f"vrob{tag}"
        self.addr_a, self.addr_b = f"10.213.{tag % 250}.1", f"10.213.{tag % 250}.2"
        self.created = []

    def up(self) -> str | None:
        """Create both namespaces and the link; returns why not, if it could not."""
        if shutil.which("ip") is None:
            return "the `ip` command (iproute2) is not installed"
        for ns in (self.a, self.b):
            result = ip("netns", "add", ns)
            if result.returncode:
                return f"network namespaces are not permitted here: {result.stderr.strip()}"
            self.created.append(ns)
        steps = [("link", "add", self.veth_a, "netns", self.a, "type", "veth", "peer", "name", self.veth_b,
                  "netns", self.b),
                 ("-n", self.a, "addr", "add", f"{self.addr_a}/24", "dev", self.veth_a),
                 ("-n", self.b, "addr", "add", f"{self.addr_b}/24", "dev", self.veth_b),
                 ("-n", self.a, "link", "set", "lo", "up"), ("-n", self.b, "link", "set", "lo", "up"),
                 ("-n", self.a, "link", "set", self.veth_a, "up"), ("-n", self.b, "link", "set", self.veth_b, "up")]
        for step in steps:
            result = ip(*step)
            if result.returncode:
                return f"could not set up the veth link ({' '.join(step)}): {result.stderr.strip()}"
        # Fast DDS lists the interfaces once, when a participant is created: a node started while
        # the veth is still coming up never announces its address, and discovery never happens.
        if not self.wait_operational(10.0):
            return "the veth link did not come up within 10 s"
        return None

    def wait_operational(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [ip("-n", ns, "-o", "link", "show", "dev", dev).stdout
                      for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b))]
            addrs = [ip("-n", ns, "-o", "-4", "addr", "show", "dev", dev).stdout
                     for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b))]
            if all("state UP" in st for st in states) and all(" inet " in a for a in addrs):
                return True
            time.sleep(0.05)
        return False

    def link(self, up: bool) -> None:
        state = "up" if up else "down"
        assert ip("-n", self.a, "link", "set", self.veth_a, state).returncode == 0

    def down(self) -> None:
        for ns in self.created:
            ip("netns", "del", ns)


@pytest.fixture
def netns():
    namespaces = Netns()
    reason = namespaces.up()
    try:
        if reason:
            pytest.skip(reason)
        yield namespaces
    finally:
        namespaces.down()


def test_synchronizer_and_engine_on_two_hosts_recover_from_a_cut_link(tmp_path, netns):
    checkpoint = write_checkpoint(tmp_path / "tiny", tiny_thinker(0), tiny_head(1))
    env = {k: v for k, v in os.environ.items() if k != "ROS_AUTOMATIC_DISCOVERY_RANGE"}
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    procs = []
    lines: list[dict] = []

    def start(ns: str, peer: str, *cmd: str, name: str):
        profile = tmp_path / f"fastdds_{ns}.xml"
        profile.write_text(PROFILE.format(peer=peer))
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *cmd],
                                env={**env, "FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append((name, proc))
        return proc

    def node_args(kind: str, *params: str):
        args = ["-m", f"roma_ros.nodes.{kind}_node", "--ros-args", "--params-file", str(REPO / "config" / "roma.yaml"),
                "-r", "__ns:=/mh"]
        for p in params:
            args += ["-p", p]
        return args

    outputs = {}
    failure = None
    try:
        start(netns.a, netns.addr_b, *node_args("synchronizer", "modality_timeout:=2.0"), name="synchronizer")
        start(netns.b, netns.addr_a, *node_args("engine", f"model_path:={checkpoint}", "default_task.id:=any",
                                                "default_task.instruction:=anything", "default_task.threshold:=0.0"),
              name="engine")
        listener = start(netns.b, netns.addr_a, "-c", LISTENER, name="listener")

        def read():
            for line in listener.stdout:
                if line.startswith("{"):
                    lines.append(json.loads(line))
        threading.Thread(target=read, daemon=True).start()
        seconds = 60
        start(netns.a, netns.addr_b, "-c", SENSOR.format(tests=TESTS, fn="camera", seconds=seconds, topic="image",
                                                          extra="width=320, height=240, fps=10"), name="camera")
        start(netns.a, netns.addr_b, "-c", SENSOR.format(tests=TESTS, fn="microphone", seconds=seconds, topic="audio",
                                                          extra="info_topic='/mh/audio_info', rate=16000, channels=1"),
              name="microphone")
        scores = lambda: [x for x in lines if "score" in x]  # noqa: E731
        deadline = time.monotonic() + 90
        while len(scores()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(scores()) >= 5, "no speak scores crossed the link"
        assert any("alert" in x for x in lines)
        netns.link(False)
        cut_at = time.monotonic()
        time.sleep(CUT_SECONDS)
        during = [x for x in scores() if cut_at + 1.0 < x["t"]]
        netns.link(True)
        restored_at = time.monotonic()
        deadline = restored_at + 40
        while not [x for x in scores() if x["t"] > restored_at] and time.monotonic() < deadline:
            time.sleep(0.1)
        after = [x for x in scores() if x["t"] > restored_at]
        assert after, "no speak scores after the link came back"
        recovery = after[0]["t"] - restored_at
        time.sleep(5)
        alerts_after = [x for x in lines if "alert" in x and x["t"] > restored_at]
        for name, proc in procs:
            assert proc.poll() is None or name in ("camera", "microphone"), name
        # stop the sensors and let the graph drain, so the engine's counters are final
        for name, proc in procs:
            if name in ("camera", "microphone"):
                proc.send_signal(2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            last_score = max(x["t"] for x in scores())
            settled = [x for x in lines if "engine" in x and x["t"] > last_score + 3.0]
            if len(settled) >= 2:
                break
        final = [x["engine"] for x in lines if "engine" in x][-1]
    except AssertionError as exc:
        failure = exc
    finally:
        for name, proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(2)
        for name, proc in procs:
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            outputs[name] = out or ""
    if failure is not None:  # with what each process printed: the reason is usually there
        tails = {name: out[-1500:] for name, out in outputs.items()}
        seen = [x for x in lines if "synchronizer" in x][-4:]
        raise AssertionError(f"{failure}\nlistener lines: {lines[-6:]}\nsynchronizer (as seen across the link): {seen}\nprocess output: {tails}") from failure
    indices = [x["score"] for x in scores()]
    missing = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
    print(f"multihost: {len(indices)} scores (units {indices[0]}..{indices[-1]}), {len(during)} during the "
          f"{CUT_SECONDS:.0f} s cut, first score {recovery:.2f} s after the link came back, "
          f"{len(missing)} units never scored, {len(alerts_after)} alerts after")
    nodes = {k: v for k, v in outputs.items() if k not in ("camera", "microphone")}  # those get SIGINT mid-sleep
    assert "Traceback" not in "".join(nodes.values()), nodes
    assert during == []  # nothing crossed while the link was down
    assert indices == sorted(set(indices))  # no duplicate across the reconnect
    assert alerts_after
    # The reliable units writer (depth 10) re-sends the units of an 8 s cut when the link returns;
    # the engine, finding that backlog, keeps only queue_size of them (overload_policy skip: it
    # returns to live data) and counts the rest. Once drained, every unit the engine received was
    # scored or counted as dropped, and every unit of the scored span reached the engine.
    print(f"multihost: engine counters after draining {final}")
    assert final["queue_depth"] == 0
    assert final["units_in"] == final["units_processed"] + final["units_dropped"], final
    assert final["units_processed"] == len(indices), (final, len(indices))
    assert final["units_in"] >= indices[-1] - indices[0] + 1, (final, indices[0], indices[-1])
    assert final["units_dropped"] >= len(missing), (final, missing)
