"""A real `colcon build` of the repository, as a robotics engineer would run it in a workspace."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
COLCON = VENV / "bin" / "colcon"


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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if not COLCON.exists():
        pytest.skip("colcon is not installed in this environment")
    ws = tmp_path_factory.mktemp("ws")
    copy_source_tree(ws / "src" / "roma_ros")
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(VENV),
        "CMAKE_PREFIX_PATH": str(VENV),
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        [str(COLCON), "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws, result.stdout + result.stderr


def test_builds_only_roma_ros(workspace):
    ws, output = workspace
    assert (ws / "install" / "roma_ros").is_dir()
    # The vendored audio_common_msgs definitions must not become a second package.
    assert not (ws / "install" / "audio_common_msgs").exists()
    assert "audio_common_msgs" not in output.split("Summary")[-1]


def test_install_tree_contents(workspace):
    ws, _ = workspace
    prefix = ws / "install" / "roma_ros"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
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
    ws, _ = workspace
    prefix = ws / "install" / "roma_ros"
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{prefix}:{VENV}"}
    code = (
        "import roma_ros, roma_ros.msg as m; from roma_ros.msg import MultimodalUnit;"
        "from roma_ros.dds import default_fastdds_profile as p;"
        "print(m.__file__); print(p())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    msg_file, profile = out.stdout.split()
    assert msg_file.startswith(str(site))
    assert profile == str(prefix / "share" / "roma_ros" / "config" / "fastdds.xml")
    version = subprocess.run([str(prefix / "lib" / "roma_ros" / "roma"), "--version"],
                             env=env, capture_output=True, text=True)
    assert version.returncode == 0 and "roma_ros" in version.stdout, version.stderr
