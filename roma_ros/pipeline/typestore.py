"""rosbag2 bags without a ROS install: a typestore that knows our interfaces, and readers/writers.

Built on `rosbags` (pure Python; sqlite3 and mcap storage). Its CDR serialization and type hashes
match ROS-generated ones, so bags written here play with `ros2 bag play` and rclpy reads them.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

# Our own interfaces plus audio_common_msgs (not part of the rosbags stores).
CUSTOM_INTERFACES = {
    "audio_common_msgs": ["AudioData", "AudioDataStamped", "AudioInfo"],
    "roma_ros": ["MultimodalUnit", "Alert", "Reply", "Query", "SpeakScore"],
}
_SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent


def _msg_search_dirs(package: str) -> list[Path]:
    dirs = [Path(p) / "share" / package / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "share" / package / "msg")
    if package == "roma_ros":
        dirs.append(_SOURCE_ROOT / "msg")
    else:
        dirs.append(_SOURCE_ROOT / "interfaces" / package / "msg")
    return dirs


def msg_definition(package: str, name: str) -> str:
    """The .msg text of package/msg/name from an installed share/ folder or the source tree."""
    for folder in _msg_search_dirs(package):
        path = folder / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"no definition of {package}/msg/{name} (looked in {_msg_search_dirs(package)})")


_TYPESTORE: Typestore | None = None


def typestore() -> Typestore:
    """The ROS 2 Kilted typestore with audio_common_msgs and roma_ros registered (cached)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        store = get_typestore(Stores.ROS2_KILTED)
        types = {}
        for package, names in CUSTOM_INTERFACES.items():
            for name in names:
                types.update(get_types_from_msg(msg_definition(package, name), f"{package}/msg/{name}"))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


def rclpy_message_class(msgtype: str):
    """The rclpy class for a type name such as 'sensor_msgs/msg/Image' (ImportError if absent)."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # 'sensor_msgs/Image' as ROS 1 style names appear in some bags
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{msgtype!r} is not a type name of the form package/msg/Name")
    package, kind, name = parts
    module = importlib.import_module(f"{package}.{kind}")
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ImportError(f"{msgtype} is not defined by the installed {package}") from exc
