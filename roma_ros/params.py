"""Read a node's parameters from a ROS 2 parameter YAML file without rclpy (for `roma eval`).

Keys are matched like rcl does for one node: `/**/NAME`, `/**`, `NAME` or `/NS/NAME` entries
apply, later and more specific ones win. Values missing from the file take the node's declared
defaults; names the node does not declare are an error (a typo must not pass silently).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

# The parameters that a launch argument or `roma run` option of the same name overrides, when
# given, per node. The synchronizer sizes frames by the model profile's rule, as the engine
# expects, so it reads the model's path and profile too.
OVERRIDABLE = {
    "synchronizer": ("use_sim_time", "compressed", "model_path", "model_profile"),
    "engine": ("use_sim_time", "model_path", "model_profile", "backend", "device", "dtype", "speak_head"),
}

# Exact replay of a bag through the live graph (`roma run --replay`, `roma demo`): reliable, deep
# sensor queues (nothing dropped while the graph is busy) and an engine that waits for the model
# instead of skipping units. A robot keeps the defaults (best effort, newest data first).
REPLAY_QOS_DEPTH = {"image": 400, "audio": 2000, "audio_info": 50}
REPLAY_SYNC = {key: value for topic, depth in REPLAY_QOS_DEPTH.items()
               for key, value in ((f"qos.{topic}.reliability", "reliable"), (f"qos.{topic}.depth", depth))}
# ... and wide timing bounds: a busy machine may deliver a bag's messages late (DDS queues of
# 28 MB/s of raw images), which must not read as lost or out-of-order data in an exact replay
REPLAY_SYNC.update(max_delay=1.5, modality_timeout=5.0, restart_tolerance=3.0)
REPLAY_ENGINE = {"overload_policy": "block", "queue_size": 16}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _applies(key: str, node: str, namespace: str) -> int:
    """0 if the YAML key does not name the node, else its specificity (higher wins)."""
    full = f"{namespace.rstrip('/')}/{node}" if namespace.strip("/") else f"/{node}"
    if key in ("/**", "**"):
        return 1
    if key in (f"/**/{node}", node):
        return 2
    if key == full:
        return 3
    return 0


def load_parameter_file(path: str | Path) -> dict:
    """A ROS 2 parameter file's contents; ValueError naming the file when it is not one (rcl and
    PyYAML would otherwise fail far from the cause)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no parameter file at {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ValueError(f"{path}: not a ROS 2 parameter file (expected node names mapping to ros__parameters)")
    for key, value in data.items():
        if value is not None and not isinstance(value.get("ros__parameters", {}), (dict, type(None))):
            raise ValueError(f"{path}: {key}: ros__parameters must be a mapping")
    return data


def node_parameters(path: str | Path, node: str, declared: dict[str, tuple[Any, str]],
                    namespace: str = "/roma") -> Callable[[str], Any]:
    """`p(name)` for `node` as configured in the YAML file at `path`."""
    data = load_parameter_file(path)
    values = {name: default for name, (default, _doc) in declared.items()}
    for key in sorted(data, key=lambda k: _applies(k, node, namespace)):
        if not _applies(key, node, namespace):
            continue
        given = _flatten((data[key] or {}).get("ros__parameters", {}) or {})
        given.pop("use_sim_time", None)
        unknown = set(given) - set(values)
        if unknown and key not in ("/**", "**"):
            raise ValueError(f"{path}: {key}: unknown parameters {sorted(unknown)}")
        values.update({k: v for k, v in given.items() if k in values})
    return values.__getitem__


def qos_parameters(prefix: str, reliability: str, durability: str, depth: int) -> dict:
    """Parameter table entries (name -> (default, description)) for one QoS profile."""
    return {
        f"{prefix}.reliability": (reliability, "best_effort | reliable"),
        f"{prefix}.durability": (durability, "volatile | transient_local"),
        f"{prefix}.depth": (depth, "queue depth (0 = keep all)"),
    }
