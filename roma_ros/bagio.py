"""Opening rosbag2 bags and reading their messages, robust to the bags found in the wild.

Used by `roma play`, `roma eval` and the demo, so every tool reads the same messages from a bag
and reports an unreadable one with the same one-line message.

Two behaviours of the underlying reader (rosbags) are handled here:
- an empty connection list must mean "nothing", never "everything";
- a bag directory whose metadata.yaml describes a topic's QoS differently from its storage file
  (rosbag2's own `talker` test bags) yields no messages through the directory reader, which
  matches connections by their full description. The storage files are then read directly (each
  with its own connection table) and merged by time.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path

from rosbags.rosbag2 import Reader


class BagError(RuntimeError):
    """A bag that cannot be opened or read (the message says why, in one line)."""


def open_bag(path: Path | str) -> Reader:
    """An open Reader, or BagError with a clear reason."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 bag (no metadata.yaml in it)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unknown storage, rmw, version, corrupt files
        raise BagError(f"cannot open bag {path}: {exc}") from exc
    return reader


def _storage_files(reader: Reader) -> list[Path]:
    from ruamel.yaml import YAML  # rosbags' own YAML parser

    meta = YAML(typ="safe").load((reader.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    files = [reader.path / p for p in meta.get("relative_file_paths", [])]
    # old bags list their files with the bag folder's name in front
    return [f if f.exists() else reader.path / f.name for f in files]


def _from_storage_files(reader: Reader, topics: set[str]) -> Iterator[tuple]:
    """Messages of `topics` read file by file (each file's own connections), merged by time;
    yielded with the directory reader's connection of the same topic and type."""
    by_key = {(c.topic, c.msgtype): c for c in reader.connections}
    files = [Reader(f) for f in _storage_files(reader) if f.is_file()]
    streams = []
    try:
        for f in files:
            f.open()
            conns = [c for c in f.connections if c.topic in topics]
            if conns:
                streams.append(((t, (by_key.get((c.topic, c.msgtype), c), t, raw))
                                for c, t, raw in f.messages(connections=conns)))
        for _, item in heapq.merge(*streams, key=lambda x: x[0]):
            yield item
    finally:
        for f in files:
            if f.is_open:
                f.close()


def read_messages(reader: Reader, connections: Iterable) -> Iterator[tuple]:
    """(connection, log time ns, raw CDR bytes) for the given connections, in time order."""
    connections = list(connections)
    if not connections:
        return
    expected = sum(c.msgcount for c in connections)
    n = 0
    for item in reader.messages(connections=connections):
        n += 1
        yield item
    if n == 0 and expected > 0 and reader.path.is_dir() and not reader.compression_mode:
        yield from _from_storage_files(reader, {c.topic for c in connections})
