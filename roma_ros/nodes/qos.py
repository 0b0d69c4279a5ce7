"""QoS profiles from parameters: `<prefix>.reliability`, `<prefix>.durability`, `<prefix>.depth`
(depth 0 = keep all: nothing is dropped by the history; DDS flow control pushes back instead)."""
from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


def qos_from_parameters(node: Node, prefix: str) -> QoSProfile:
    reliability = str(node.get_parameter(f"{prefix}.reliability").value).lower()
    durability = str(node.get_parameter(f"{prefix}.durability").value).lower()
    if reliability not in RELIABILITY or durability not in DURABILITY:
        raise ValueError(f"{prefix}: reliability must be best_effort|reliable and durability "
                         f"volatile|transient_local, got {reliability!r}, {durability!r}")
    depth = int(node.get_parameter(f"{prefix}.depth").value)
    if depth < 0:
        raise ValueError(f"{prefix}.depth must be >= 0 (0 = keep all), got {depth}")
    history = HistoryPolicy.KEEP_ALL if depth == 0 else HistoryPolicy.KEEP_LAST
    return QoSProfile(history=history, depth=max(depth, 1),
                      reliability=RELIABILITY[reliability], durability=DURABILITY[durability])


def incompatible_qos_events(diagnostics, topic: str, publisher: bool = False):
    """Event callbacks that count and log a peer whose QoS cannot match ours on `topic` (e.g. a
    reliable subscriber on a best-effort publisher, or transient_local asked of a volatile
    writer): errors.incompatible_qos on /diagnostics plus a warning naming the policy (events
    come once per mismatched peer, not per message). Without this, DDS just never connects the
    two and nothing says why."""
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks

    side = "subscriber" if publisher else "publisher"

    def on_incompatible(info) -> None:
        policy = getattr(info.last_policy_kind, "name", str(info.last_policy_kind))
        policy = policy.replace("RMW_QOS_POLICY_", "")
        diagnostics.count("errors.incompatible_qos", max(1, int(info.total_count_change)))
        # once per discovered peer (not per message), so logged every time
        diagnostics.node.get_logger().warning(
            f"incompatible_qos: a {side} on {topic} has an incompatible QoS ({policy}); it will get "
            f"no data: align its QoS with the qos.* parameters [{info.total_count} on this topic]")

    if publisher:
        return PublisherEventCallbacks(incompatible_qos=on_incompatible)
    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)
