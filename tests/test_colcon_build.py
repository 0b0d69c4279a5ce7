"""A real `colcon build` of the repository, as a robotics engineer would run it in a workspace.

The build runs against each ROS 2 distribution we claim: Kilted (the wheels of this test
environment) and Jazzy (a second virtual environment made by scripts/jazzy_venv.sh and named by
ROMA_JAZZY_VENV; without it the Jazzy builds are skipped).
"""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
JAZZY_ENV = "ROMA_JAZZY_VENV"
# Variables of the calling environment that would make a second venv's python or CMake pick up
# this venv's ROS (the ROS wheels' bootstrapper re-executes python with LD_LIBRARY_PATH set).
LEAKY = ("LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "PYTHONPATH", "PYTHONHOME",
         "VIRTUAL_ENV", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH")


def distro_venv(distro: str) -> Path:
    """The virtual environment whose ROS 2 wheels the build uses."""
    if distro == "kilted":
        return Path(sys.prefix)
    path = os.environ.get(JAZZY_ENV)
    if not path:
        pytest.skip(f"{JAZZY_ENV} is not set: `bash scripts/jazzy_venv.sh /tmp/roma_jazzy` makes "
                    f"a ROS 2 Jazzy venv, then run with {JAZZY_ENV}=/tmp/roma_jazzy")
    venv = Path(path).resolve()
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('ros-jazzy-rclpy'))"],
        env=clean_env(venv), capture_output=True, text=True)
    assert probe.returncode == 0, f"{JAZZY_ENV}={path} is not a ROS 2 Jazzy venv: {probe.stderr}"
    return venv


def clean_env(venv: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def executables():
    lines = (REPO / "resource" / "executables").read_text().splitlines()
    return [line.split("=")[0].strip() for line in lines if "=" in line and not line.startswith("#")]


def copy_source_tree(dest: Path) -> None:
    """Copy what a clone of the repository holds (tracked and not-ignored files)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    dest.mkdir(parents=True)
    archive = dest.parent / "src.tar"
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, files):
            if (REPO / name).exists():
                tar.add(REPO / name, arcname=name)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="fully_trusted")


@pytest.fixture(scope="module", params=["kilted", "jazzy"])
def workspace(request, tmp_path_factory):
    venv = distro_venv(request.param)
    colcon = venv / "bin" / "colcon"
    if not colcon.exists():
        pytest.skip(f"colcon is not installed in {venv}")
    python = venv / "bin" / "python"
    ws = tmp_path_factory.mktemp(f"ws_{request.param}")
    copy_source_tree(ws / "src" / "roma_ros")
    env = clean_env(venv, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    result = subprocess.run(
        [str(colcon), "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws, result.stdout + result.stderr, venv


def test_builds_only_roma_ros(workspace):
    ws, output, _ = workspace
    assert (ws / "install" / "roma_ros").is_dir()
    # The vendored audio_common_msgs definitions must not become a second package.
    assert not (ws / "install" / "audio_common_msgs").exists()
    assert "audio_common_msgs" not in output.split("Summary")[-1]


def test_install_tree_contents(workspace):
    ws, _, _ = workspace
    prefix = ws / "install" / "roma_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    for module in ["msg/_multimodal_unit.py", "msg/_alert.py", "msg/_reply.py", "msg/_query.py",
                   "msg/_speak_score.py", "srv/_set_task.py", "srv/_clear_task.py", "action/_ask.py",
                   "core/unit.py", "cli.py"]:
        assert (site / "roma_ros" / module).is_file(), module
    names = executables()
    assert "roma" in names
    for name in names:
        exe = prefix / "lib" / "roma_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), name
    launch_files = list((prefix / "share" / "roma_ros" / "launch").glob("*.launch.py"))
    assert launch_files
    for config in (REPO / "config").iterdir():
        assert (prefix / "share" / "roma_ros" / "config" / config.name).is_file(), config.name


def test_installed_package_runs_from_the_install_tree(workspace):
    """What a user gets after `source install/setup.sh` (sh: colcon-bash is not installed here)."""
    ws, _, venv = workspace
    prefix = ws / "install" / "roma_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    # The round trip loads the generated C type support, linked against the distro's libraries.
    code = (
        "import roma_ros, roma_ros.msg as m; from roma_ros.msg import MultimodalUnit;"
        "from roma_ros.dds import default_fastdds_profile as p;"
        "import rclpy, rclpy.serialization as s; u = MultimodalUnit(index=7, sample_rate=16000);"
        "assert s.deserialize_message(s.serialize_message(u), MultimodalUnit) == u;"
        "print(m.__file__); print(p()); print(rclpy.__file__)"
    )
    env = clean_env(venv, AMENT_PREFIX_PATH=str(venv), CODE=code)

    def sourced(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", f". install/setup.sh && {command}"], cwd=ws, env=env,
                              capture_output=True, text=True)

    out = sourced('python -c "$CODE"')
    assert out.returncode == 0, out.stderr
    msg_file, profile, rclpy_file = out.stdout.split()
    assert msg_file.startswith(str(site))
    assert rclpy_file.startswith(str(venv))
    assert profile == str(prefix / "share" / "roma_ros" / "config" / "fastdds.xml")
    version = sourced(f"{prefix / 'lib' / 'roma_ros' / 'roma'} --version")
    assert version.returncode == 0 and "roma_ros" in version.stdout, version.stderr
