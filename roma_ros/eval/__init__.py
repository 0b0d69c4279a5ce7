"""Offline replay of rosbag2 bags, metrics and reports."""
