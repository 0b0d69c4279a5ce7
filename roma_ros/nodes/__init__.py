"""Thin rclpy wrappers around core/ and engine/."""
