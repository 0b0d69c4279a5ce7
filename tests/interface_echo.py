"""A separate process for tests: subscribes `<name>_in` for each roma_ros message type and
republishes every message unchanged on `<name>_out`. Prints READY once its entities exist."""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from roma_ros.msg import Alert, MultimodalUnit, Query, Reply, SpeakScore

TYPES = {"unit": MultimodalUnit, "alert": Alert, "reply": Reply, "query": Query, "score": SpeakScore}
QOS = QoSProfile(
    depth=10,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("interface_echo")
    keep = []
    for name, msg_type in TYPES.items():
        pub = node.create_publisher(msg_type, f"{name}_out", QOS)
        keep.append(node.create_subscription(msg_type, f"{name}_in", pub.publish, QOS))
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
