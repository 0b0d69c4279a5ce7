"""`roma doctor`: what matters in the caller's environment, each failure with its fix.

Checks, in order: the Python packages roma_ros imports (interfaces included); the DDS settings
of the calling shell as they are (nothing is set here first: a node started from this shell with
`ros2 run` sees the same); the compute device; ONNX Runtime and TensorRT; and the configured
model: it is loaded and fed one unit, with timings. Exit status 1 when a check fails.
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from roma_ros import __version__
from roma_ros.dds import PROFILE_ENV, default_fastdds_profile

SETUP_FIX = "run `make setup` (or `pip install -r requirements/runtime.txt` in a ROS 2 environment)"
REQUIRED = {
    "rclpy": "source your ROS 2 installation (`source /opt/ros/<distro>/setup.bash`) or " + SETUP_FIX,
    "roma_ros.msg": "build the interfaces: `colcon build --packages-select roma_ros` and `source install/setup.bash`",
    "roma_ros.srv": "build the interfaces (as for roma_ros.msg)",
    "roma_ros.action": "build the interfaces (as for roma_ros.msg)",
    "audio_common_msgs.msg": "install audio_common_msgs (`apt install ros-<distro>-audio-common-msgs`) or " + SETUP_FIX,
    "numpy": SETUP_FIX, "cv2": SETUP_FIX, "soxr": SETUP_FIX, "torch": SETUP_FIX, "transformers": SETUP_FIX,
    "rosbags": SETUP_FIX,
}
OPTIONAL = {
    "onnxruntime": "needed for backend: onnxruntime; " + SETUP_FIX,
    "tensorrt": "needed for backend: tensorrt: install NVIDIA's TensorRT Python package on the GPU machine",
    "av": "needed by `roma convert`; " + SETUP_FIX,
    "silero_vad": "needed by the roma-release profile's speech gate; " + SETUP_FIX,
}


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail" | "info"
    detail: str
    fix: str = ""


def _version(module: str) -> str:
    mod = importlib.import_module(module)
    return str(getattr(mod, "__version__", "") or "importable")


def check_imports() -> list[Check]:
    checks = []
    for table, missing_status in ((REQUIRED, "fail"), (OPTIONAL, "info")):
        for module, fix in table.items():
            try:
                checks.append(Check(module, "ok", _version(module)))
            except Exception as exc:  # ImportError, or a broken extension
                checks.append(Check(module, missing_status, f"not importable: {type(exc).__name__}: {exc}", fix))
    return checks


def check_dds(env=None) -> list[Check]:
    """The calling shell's settings, as found."""
    env = os.environ if env is None else env
    ours = default_fastdds_profile()
    checks = []
    rmw = env.get("RMW_IMPLEMENTATION", "")
    checks.append(Check("RMW_IMPLEMENTATION", "ok" if rmw in ("", "rmw_fastrtps_cpp") else "info",
                        rmw or "unset (the distro's default, Fast DDS)",
                        "" if rmw in ("", "rmw_fastrtps_cpp") else
                        f"roma_ros's large-image profile is for Fast DDS; with {rmw} tune that middleware for "
                        "large best-effort messages yourself"))
    profile = env.get(PROFILE_ENV, "")
    if not profile:
        checks.append(Check(PROFILE_ENV, "warn", "unset in this shell: `ros2 launch roma_ros roma.launch.py` and "
                            "roma's own commands set roma_ros's profile, but nodes started otherwise (ros2 run, "
                            "your camera driver) use Fast DDS defaults, with which 640x480 best-effort frames "
                            "at 30 Hz almost never arrive",
                            f"export {PROFILE_ENV}={ours}"))
    elif not Path(profile).is_file():
        checks.append(Check(PROFILE_ENV, "fail", f"{profile} does not exist", f"export {PROFILE_ENV}={ours}"))
    else:
        checks.append(Check(PROFILE_ENV, "ok", profile))
    checks.append(Check("ROS_DOMAIN_ID", "info", env.get("ROS_DOMAIN_ID", "0 (default)")))
    return checks


def check_device(device: str) -> list[Check]:
    try:
        import torch
    except ImportError:
        return []
    cuda = torch.cuda.is_available()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ""
    checks = [Check("torch devices", "ok", f"cpu{', cuda: ' + names if cuda else ''}")]
    if device.startswith("cuda") and not cuda:
        checks.append(Check(f"device {device}", "fail", "CUDA is not available to torch",
                            "use device: cpu, or install the CUDA build of torch that matches this machine's driver"))
    return checks


def check_accelerators() -> list[Check]:
    checks = []
    try:
        import onnxruntime

        checks.append(Check("onnxruntime providers", "ok", ", ".join(onnxruntime.get_available_providers())))
    except ImportError:
        pass
    return checks


def check_model(p) -> list[Check]:
    """Load the configured model as engine_node would and run one unit of grey frames and silence."""
    import numpy as np

    from roma_ros.core.image_decode import RawImage, decode_frame
    from roma_ros.core.unit import Unit
    from roma_ros.pipeline.engine import build_session

    what = f"{p('model_path')} ({p('backend')}, {p('device')}, {p('dtype')}, profile {p('model_profile')})"
    print(f"loading model {what} ...", flush=True)
    started = time.perf_counter()
    try:
        session = build_session(p)
    except Exception as exc:
        return [Check("model", "fail", f"{what} did not load: {type(exc).__name__}: {exc}",
                      "check model_path (a directory with config.json and .safetensors files, or 'embedded'), "
                      "backend, device and dtype in your parameter file or options")]
    load_s = time.perf_counter() - started
    profile = getattr(session.model, "model_profile", None)
    sizing = profile.frames if profile is not None else None
    grey = RawImage(360, 640, "rgb8", 640 * 3, bytes(360 * 640 * 3))
    frame = decode_frame(grey, sizing=sizing) if sizing is not None else decode_frame(grey)
    checks = [Check("model load", "ok", f"{what} in {load_s:.1f} s")]
    times = []
    try:
        for index in range(3):  # the first unit pays one-time costs
            unit = Unit(index=index, start_ns=index * 10**9, duration_ns=10**9, frames=[frame, frame],
                        audio=np.zeros(16000, np.float32))
            started = time.perf_counter()
            step = session.process(unit)
            times.append(time.perf_counter() - started)
    except Exception as exc:
        return checks + [Check("model unit", "fail", f"one unit failed: {type(exc).__name__}: {exc}",
                               "run `roma doctor` again with --device cpu --dtype float32 to tell the model "
                               "from the device apart")]
    probability = float(step.probability)
    status = "ok" if np.isfinite(probability) else "fail"
    checks.append(Check("model unit", status,
                        f"first unit {times[0] * 1000:.0f} ms, then {min(times[1:]) * 1000:.0f} ms per 1-s unit "
                        f"(real-time factor {min(times[1:]):.3f}); p(speak) {probability:.3f}",
                        "" if status == "ok" else "the model gives non-finite probabilities: check dtype "
                                                  "(float16 overflows on some models; try bfloat16 or float32)"))
    if min(times[1:]) > 1.0:
        checks.append(Check("real time", "warn", "one unit takes longer than the second it covers",
                            "use a GPU (device: cuda, dtype: bfloat16), the onnxruntime backend, or a smaller model"))
    return checks


def report(checks: list[Check], out=None) -> int:
    """Print the checks; returns how many failed."""
    out = out or sys.stdout
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "    "}
    for check in checks:
        print(f"  [{marks[check.status]}] {check.name:<28} {check.detail}", file=out)
        if check.fix and check.status != "ok":
            print(f"         fix: {check.fix}", file=out)
    out.flush()
    return sum(c.status == "fail" for c in checks)


def run(p, skip_model: bool = False) -> int:
    print(f"roma_ros {__version__} on Python {platform.python_version()} ({sys.executable})")
    checks = check_imports() + check_dds() + check_device(str(p("device"))) + check_accelerators()
    failed = report(checks)
    if not skip_model and not any(c.status == "fail" and c.name in ("torch", "transformers") for c in checks):
        model_checks = check_model(p)
        failed += report(model_checks)
        checks += model_checks
    print(f"{failed} failed, {sum(c.status == 'warn' for c in checks)} warnings")
    return 1 if failed else 0
