"""The `roma` console script."""
import subprocess
import sys
from pathlib import Path

ROMA = Path(sys.prefix) / "bin" / "roma"


def test_doctor_reports_a_working_installation():
    result = subprocess.run([str(ROMA), "doctor"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["rclpy", "roma_ros.msg", "audio_common_msgs.msg", "torch", "transformers"]:
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name))
        assert "missing" not in line, line
    assert "fastdds.xml" in result.stdout


def test_unknown_command_fails_with_usage():
    result = subprocess.run([str(ROMA), "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: roma" in result.stderr
