"""`roma`: one command for everything that is not a ROS node."""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys

from roma_ros import __version__
from roma_ros.dds import PROFILE_ENV, apply_dds_defaults


def _version_of(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken install can raise anything on import
        return f"missing ({type(exc).__name__}: {exc})"
    return getattr(module, "__version__", "ok")


def cmd_doctor(_args: argparse.Namespace) -> int:
    """Report what this installation can do; exit 1 when something required is missing."""
    apply_dds_defaults()
    required = ["rclpy", "roma_ros.msg", "roma_ros.srv", "roma_ros.action", "audio_common_msgs.msg",
                "numpy", "cv2", "soxr", "torch", "transformers", "rosbags"]
    optional = ["onnxruntime", "tensorrt", "av"]
    print(f"roma_ros {__version__} on Python {platform.python_version()} ({sys.executable})")
    failed = False
    for name in required + optional:
        status = _version_of(name)
        if status.startswith("missing") and name in required:
            failed = True
        tag = "required" if name in required else "optional"
        print(f"  {name:<22} {status}  [{tag}]")
    print(f"  RMW_IMPLEMENTATION     {os.environ.get('RMW_IMPLEMENTATION')}")
    print(f"  {PROFILE_ENV} {os.environ.get(PROFILE_ENV)}")
    print(f"  ROS_DOMAIN_ID          {os.environ.get('ROS_DOMAIN_ID', '0 (default)')}")
    try:
        import torch

        print(f"  torch devices          cpu{' cuda' if torch.cuda.is_available() else ''}")
    except ImportError:
        pass
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roma", description=__doc__)
    parser.add_argument("--version", action="version", version=f"roma_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check the installation (interfaces, DDS, backends)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
