"""Pure-Python algorithms (no rclpy): decoding, unit assembly, triggers, task bookkeeping."""
