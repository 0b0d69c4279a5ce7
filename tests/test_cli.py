"""The `roma` console script."""
import subprocess
import sys
from pathlib import Path

ROMA = Path(sys.prefix) / "bin" / "roma"


def test_doctor_reports_a_working_installation():
    result = subprocess.run([str(ROMA), "doctor", "--no-model"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["rclpy", "roma_ros.msg", "audio_common_msgs.msg", "torch", "transformers"]:
        line = next(line for line in result.stdout.splitlines() if line.split("]")[-1].split()[0] == name)
        assert line.strip().startswith("[ok  ]"), line
    assert "fastdds.xml" in result.stdout


def test_unknown_command_fails_with_usage():
    result = subprocess.run([str(ROMA), "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: roma" in result.stderr


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield name, child
                yield from _subparsers(child)


def test_every_option_explains_itself_and_shows_its_default():
    from roma_ros.cli import build_parser

    for name, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"roma {name} {action.option_strings[0]} has no help text"
    help_text = subprocess.run([str(ROMA), "play", "--help"], capture_output=True, text=True).stdout
    assert "(default: 10.0)" in " ".join(help_text.split())  # --wait-timeout


def test_convert_is_also_reachable_by_its_old_name_record():
    for name in ("convert", "record"):
        result = subprocess.run([str(ROMA), name, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "rosbag2 bag" in result.stdout.lower() + result.stderr.lower(), name


def _doctor(*args, env_update=None, drop=()):
    import os

    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update or {})
    return subprocess.run([str(ROMA), "doctor", *args], capture_output=True, text=True, timeout=300, env=env)


def test_doctor_reads_the_callers_dds_profile_and_says_how_to_set_it():
    unset = _doctor("--no-model", drop=("FASTDDS_DEFAULT_PROFILES_FILE",))
    assert unset.returncode == 0, unset.stdout + unset.stderr
    line = next(l for l in unset.stdout.splitlines() if "FASTDDS_DEFAULT_PROFILES_FILE" in l)
    assert "[WARN]" in line and "unset in this shell" in line
    assert "fix: export FASTDDS_DEFAULT_PROFILES_FILE=" in unset.stdout and "fastdds.xml" in unset.stdout
    missing = _doctor("--no-model", env_update={"FASTDDS_DEFAULT_PROFILES_FILE": "/nonexistent/profile.xml"})
    assert missing.returncode == 1
    assert "[FAIL] FASTDDS_DEFAULT_PROFILES_FILE /nonexistent/profile.xml does not exist" in missing.stdout


def test_doctor_loads_the_configured_model_and_times_one_unit(tmp_path):
    ok = _doctor()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[ok  ] model load" in ok.stdout and "per 1-s unit" in ok.stdout
    broken = _doctor("--model-path", str(tmp_path / "missing"))
    assert broken.returncode == 1
    fail = next(l for l in broken.stdout.splitlines() if l.strip().startswith("[FAIL] model"))
    assert "missing" in fail and "fix: check model_path" in broken.stdout
    no_cuda = _doctor("--no-model", "--device", "cuda")
    import torch

    if not torch.cuda.is_available():
        assert no_cuda.returncode == 1 and "[FAIL] device cuda" in no_cuda.stdout
