"""QoS profiles from parameters: `<prefix>.reliability`, `<prefix>.durability`, `<prefix>.depth`."""
from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


def qos_parameters(prefix: str, reliability: str, durability: str, depth: int) -> dict:
    """Parameter table entries (name -> (default, description)) for one QoS profile."""
    return {
        f"{prefix}.reliability": (reliability, "best_effort | reliable"),
        f"{prefix}.durability": (durability, "volatile | transient_local"),
        f"{prefix}.depth": (depth, "queue depth"),
    }


def qos_from_parameters(node: Node, prefix: str) -> QoSProfile:
    reliability = str(node.get_parameter(f"{prefix}.reliability").value).lower()
    durability = str(node.get_parameter(f"{prefix}.durability").value).lower()
    if reliability not in RELIABILITY or durability not in DURABILITY:
        raise ValueError(f"{prefix}: reliability must be best_effort|reliable and durability "
                         f"volatile|transient_local, got {reliability!r}, {durability!r}")
    return QoSProfile(depth=int(node.get_parameter(f"{prefix}.depth").value),
                      reliability=RELIABILITY[reliability], durability=DURABILITY[durability])
