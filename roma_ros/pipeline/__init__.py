"""What a node does, without rclpy: parameter tables, the synchronizer's pipeline, the engine's
session and the message conversions. Nodes wrap it; `roma eval`, benchmarks and tools drive it
directly, so live and offline runs share one code path."""
