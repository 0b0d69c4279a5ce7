"""Test-wide setup: every test run gets its own DDS domain on loopback, and our Fast DDS profile.

Set before rclpy is imported anywhere, so child processes started by tests inherit it too.
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

# A domain per test process keeps parallel runs (and other ROS users on the machine) apart.
# Ids 1..100 stay inside the range whose ports need no special configuration.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)

from roma_ros.dds import apply_dds_defaults  # noqa: E402

apply_dds_defaults()

# Property tests: the same examples on every `make test` (CI must not fail on a new random draw);
# ROMA_HYPOTHESIS=explore draws new examples each run, to hunt for counterexamples locally.
from hypothesis import settings  # noqa: E402

settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("explore" if os.environ.get("ROMA_HYPOTHESIS") == "explore" else "repeatable")
