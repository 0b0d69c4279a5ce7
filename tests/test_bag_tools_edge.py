"""Bag tools on bags and media they did not write: foreign bags, cut files, encoder padding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import get_types_from_msg

from media import write_test_video
from roma_ros.bagio import BagError, open_bag, read_messages
from roma_ros.pipeline.typestore import typestore

ROMA = str(Path(sys.prefix) / "bin" / "roma")


def roma(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([ROMA, *args], capture_output=True, text=True, timeout=timeout)


def write_bag(path: Path, msgtype: str = "std_msgs/msg/String", n: int = 5, msgdef: str | None = None) -> Path:
    store = typestore()
    if msgdef is not None:
        store.register(get_types_from_msg(msgdef, msgtype))
    with Writer(path, version=8) as writer:
        conn = writer.add_connection("/chatter", msgtype, typestore=store)
        cls = store.types[msgtype]
        for i in range(n):
            msg = cls(data=f"hello {i}") if msgdef is None else cls(x=i)
            writer.write(conn, (i + 1) * 100_000_000, store.serialize_cdr(msg, msgtype))
    return path


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("roma ")]
    assert len(errors) == 1, result.stderr
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize("make,words", [
    (lambda p: p / "missing", ("no bag at",)),
    (lambda p: p, ("not a rosbag2 bag", "metadata.yaml")),
])
def test_play_reports_unreadable_paths_in_one_line(tmp_path, make, words):
    one_line_error(roma("play", str(make(tmp_path))), *words)


def test_play_reports_a_bag_of_unknown_types_instead_of_crashing(tmp_path):
    bag = write_bag(tmp_path / "bag", "fake_robot_msgs/msg/Thing", msgdef="int32 x")
    one_line_error(roma("play", str(bag)), "nothing to play", "fake_robot_msgs/msg/Thing")


def test_an_empty_connection_list_reads_nothing():
    bag = Path(__file__).resolve().parent.parent / "roma_ros" / "data" / "sample" / "bag"
    reader = open_bag(bag)
    try:
        assert list(read_messages(reader, [])) == []
        assert sum(1 for _ in read_messages(reader, reader.connections[:1])) == reader.connections[0].msgcount
    finally:
        reader.close()


def test_bags_whose_metadata_disagrees_with_their_storage_are_read_whole(tmp_path):
    # rosbag2's own talker bags: metadata.yaml's QoS text differs from the storage file's
    import sqlite3

    bag = write_bag(tmp_path / "bag")
    qos = ("- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 0\n    nsec: 0\n"
           "  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n"
           "    nsec: 0\n  avoid_ros_namespace_conventions: false")
    with sqlite3.connect(next(bag.glob("*.db3"))) as db:
        db.execute("UPDATE topics SET offered_qos_profiles = ?", (qos,))
    with Reader(bag) as raw:
        if sum(1 for _ in raw.messages(connections=raw.connections)) == 5:
            pytest.skip("this rosbags version reads the bag directly")
    reader = open_bag(bag)
    try:
        got = [t for _, t, _ in read_messages(reader, reader.connections)]
    finally:
        reader.close()
    assert got == [(i + 1) * 100_000_000 for i in range(5)]
    played = roma("play", str(bag), "--no-wait")  # the player reads what the evaluator reads
    assert played.returncode == 0, played.stderr
    assert "done: /chatter: 5" in played.stdout


def test_play_missing_topic_is_named(tmp_path):
    bag = write_bag(tmp_path / "bag")
    one_line_error(roma("play", str(bag), "--topics", "/nope"), "/nope", "/chatter")


@pytest.fixture(scope="module")
def faststart(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("media") / "fast.mp4", seconds=3.0, faststart=True)


@pytest.mark.parametrize("keep", [40, 200, 1000, 3000])
def test_record_of_a_file_cut_in_its_header_fails_cleanly_and_leaves_no_bag(faststart, tmp_path, keep):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[:keep])
    out = tmp_path / "bag"
    result = roma("record", str(cut), "-o", str(out))
    if result.returncode == 0:  # the cut left whole packets: then it must say the file is cut
        assert "cut short" in result.stderr or "damaged" in result.stderr, result.stderr
        return
    one_line_error(result, str(cut))
    assert not out.exists()


def test_record_of_a_cut_file_keeps_what_is_there_and_says_so(faststart, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = faststart.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "bag"
    result = roma("record", str(cut), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "cut short" in result.stderr
    with Reader(out) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/roma/image"] > 0 and counts["/roma/audio"] > 0


def test_record_compressed_writes_where_a_compressed_synchronizer_listens(faststart, tmp_path):
    out = tmp_path / "bag"
    result = roma("record", str(faststart), "-o", str(out), "--compressed")
    assert result.returncode == 0, result.stderr
    with Reader(out) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics["/roma/image/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert "/roma/image" not in topics


def test_encoder_padding_at_the_end_is_not_a_scored_unit():
    from roma_ros.core.unit import NS_PER_S, Unit
    from roma_ros.pipeline.synchronizer import is_tail_fragment

    pad = Unit(index=5, start_ns=5 * NS_PER_S, duration_ns=NS_PER_S, frames=[], audio=np.zeros(16000, np.float32),
               frame_stamps_ns=[], audio_coverage=640 / 48000)
    assert is_tail_fragment(pad)
    repeated = Unit(index=5, start_ns=5 * NS_PER_S, duration_ns=NS_PER_S, frames=[np.zeros((168, 336, 3), np.uint8)] * 2,
                    audio=np.zeros(16000, np.float32), frame_stamps_ns=[], audio_coverage=0.013, repeated_frames=2)
    assert is_tail_fragment(repeated)
    half = Unit(index=5, start_ns=5 * NS_PER_S, duration_ns=NS_PER_S, frames=[], audio=np.zeros(16000, np.float32),
                frame_stamps_ns=[], audio_coverage=0.6)
    assert not is_tail_fragment(half)
    seen = Unit(index=5, start_ns=5 * NS_PER_S, duration_ns=NS_PER_S, frames=[np.zeros((168, 336, 3), np.uint8)],
                audio=np.zeros(16000, np.float32), frame_stamps_ns=[5 * NS_PER_S], audio_coverage=0.01)
    assert not is_tail_fragment(seen)


def test_a_recorded_five_second_clip_is_five_units(tmp_path):
    clip = write_test_video(tmp_path / "five.mp4", seconds=5.0)
    bag = tmp_path / "bag"
    assert roma("record", str(clip), "-o", str(bag)).returncode == 0
    result = roma("eval", str(bag), "-o", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stderr
    import csv

    rows = list(csv.DictReader(open(next((tmp_path / "out").rglob("units.csv")))))
    assert len(rows) == 5, rows


def test_play_remap_is_ours_not_a_deprecated_ros_argument(tmp_path):
    bag = write_bag(tmp_path / "bag")
    result = roma("play", str(bag), "--no-wait", "--remap", "/chatter:=/elsewhere")
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in (result.stderr + result.stdout).lower()
    assert "done: /chatter: 5" in result.stdout


@pytest.mark.parametrize("first_silent", ["video", "audio"])
def test_the_live_synchronizer_drops_the_padding_unit_too(tmp_path, first_silent):
    """The node ends a stream by marking its inputs silent (after modality_timeout), in either
    order: the AAC padding after the last second is dropped there as in `roma eval`, and counted."""
    from roma_ros.bagio import open_bag, read_messages
    from roma_ros.core.assembler import AUDIO, VIDEO
    from roma_ros.eval.runner import checked_deserialize
    from roma_ros.pipeline.synchronizer import PARAMETERS, SynchronizerPipeline, synchronizer_settings

    clip = write_test_video(tmp_path / "five.mp4", seconds=5.0)
    bag = tmp_path / "bag"
    assert roma("record", str(clip), "-o", str(bag)).returncode == 0
    config, fallback = synchronizer_settings(lambda name: PARAMETERS[name][0])
    pipeline = SynchronizerPipeline(config, fallback)
    handlers = {"sensor_msgs/msg/Image": pipeline.image, "audio_common_msgs/msg/AudioDataStamped": pipeline.audio,
                "audio_common_msgs/msg/AudioInfo": pipeline.audio_info}
    units = []
    reader = open_bag(bag)
    try:
        for conn, _t, raw in read_messages(reader, reader.connections):
            if conn.msgtype in handlers:
                units += handlers[conn.msgtype](checked_deserialize(raw, conn.msgtype))
    finally:
        reader.close()
    order = (VIDEO, AUDIO) if first_silent == "video" else (AUDIO, VIDEO)
    units += pipeline.mark_silent(order[0]) + pipeline.mark_silent(order[1])
    assert len(units) == 5
    assert pipeline.counters["tail_fragments_dropped"] == 1


def test_play_skips_topics_whose_type_names_no_message_and_plays_the_rest(tmp_path):
    """Type names that are not messages (one part, four parts, a service recorded as a topic)
    are skipped with their reason; the rest of the bag plays."""
    import sqlite3

    import yaml

    bag = write_bag(tmp_path / "bag")
    odd = (("/weird", "weird"), ("/srv", "std_srvs/srv/Trigger"), ("/deep", "a/b/c/d"))
    db = next(bag.glob("*.db3"))
    with sqlite3.connect(db) as con:
        row = list(con.execute("select * from topics").fetchone())
        for i, (name, msgtype) in enumerate(odd, start=100):
            con.execute(f"insert into topics values ({','.join('?' * len(row))})", [i, name, msgtype, *row[3:]])
            con.execute("insert into messages (topic_id, timestamp, data) values (?, ?, ?)", (i, 2, b"\0\1\0\0"))
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    for name, msgtype in odd:
        entry = yaml.safe_load(yaml.safe_dump(info["topics_with_message_count"][0]))
        entry["topic_metadata"].update(name=name, type=msgtype)
        entry["message_count"] = 1
        info["topics_with_message_count"].append(entry)
    info["message_count"] += len(odd)
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    result = roma("play", str(bag), "--no-wait")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name, _ in odd:
        assert f"not playing {name}:" in result.stderr, result.stderr
    assert "package/msg/Name" in result.stderr and "service" in result.stderr
    assert "done: /chatter: 5" in result.stdout
