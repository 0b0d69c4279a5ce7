#!/usr/bin/env bash
# One-command setup (called by `make setup`): a Python 3.11 virtual environment in .venv with the
# pinned dependencies, our ROS interfaces (and audio_common_msgs when no distro provides it)
# built and installed into it, and roma_ros installed in editable mode. Every step is skipped
# when its inputs have not changed, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
STAMPS=$VENV/.roma_stamps
# This machine's pip configuration names index folders that may not exist; pip warns per package.
quiet_pip() { "$PY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
START=$SECONDS
log() { printf '\033[1m[setup +%ss]\033[0m %s\n' "$((SECONDS - START))" "$*"; }
# A long step says every 30 s that it is still running (pip -q prints nothing for minutes).
with_heartbeat() {  # what, command...
  local what=$1; shift
  "$@" & local pid=$!
  while ! wait_for "$pid" 30; do log "  ... $what, still running"; done
  wait "$pid"
}
wait_for() {  # pid, seconds: 0 once the process has ended
  local i
  for ((i = 0; i < $2; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done
  ! kill -0 "$1" 2>/dev/null
}

# A step runs again only when the checksum of its inputs changed.
digest() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_done() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

need_system_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v make >/dev/null || missing+=(make)
  command -v g++ >/dev/null || missing+=(g++)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing ${missing[*]} with apt-get"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      echo "setup needs: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2; exit 1
    fi
  fi
}

# 1. The virtual environment (Python 3.11: the ROS 2 Kilted wheels are built for it).
if [ ! -x "$PY" ]; then
  PYTHON=${PYTHON:-$(command -v python3.11 || true)}
  if [ -z "$PYTHON" ]; then
    echo "Python 3.11 is required (apt-get install python3.11 python3.11-venv)" >&2; exit 1
  fi
  log "1/4 creating .venv with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

# 2. Pinned Python dependencies.
key=$(digest requirements/lock.txt)
if ! up_to_date deps "$key"; then
  log "2/4 installing pinned dependencies (requirements/lock.txt: $(grep -c '==' requirements/lock.txt) packages, about 2 GB; minutes on a first run)"
  with_heartbeat "installing dependencies" quiet_pip install -q --disable-pip-version-check -r requirements/lock.txt
  mark_done deps "$key"
fi

# 3. roma_ros itself, editable, so .venv/bin holds our console scripts. Must come before the
#    interfaces: rosidl installs an egg-info named roma_ros that pip would otherwise uninstall,
#    taking the generated modules with it.
key=$(digest setup.py resource/executables)
if ! up_to_date package "$key"; then
  log "3/4 installing roma_ros (editable)"
  rm -rf "$VENV"/lib/python3.*/site-packages/roma_ros-*.egg-info
  quiet_pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    -e . --config-settings editable_mode=compat
  mark_done package "$key"
fi

# 4. Interfaces, built with the ROS wheels' own CMake tool chain into the venv prefix.
build_interfaces() {  # source dir, build dir, extra cmake args...
  local src=$1 build=$2; shift 2
  cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF "$@" >"$build.log" 2>&1 \
    && cmake --build "$build" --target install -j "$(nproc)" >>"$build.log" 2>&1 \
    || { echo "interface build failed, see $build.log:" >&2; tail -30 "$build.log" >&2; exit 1; }
}
key=$(digest msg/* srv/* action/* interfaces/audio_common_msgs/msg/* CMakeLists.txt cmake/* \
  interfaces/audio_common_msgs/CMakeLists.txt package.xml)
if ! up_to_date interfaces "$key"; then
  need_system_tools
  mkdir -p build
  if "$PY" -c "import audio_common_msgs.msg" 2>/dev/null \
      && [ ! -f "$VENV/share/audio_common_msgs/roma_ros_vendored" ]; then
    log "4/4 audio_common_msgs found: using it"
  else
    log "4/4 building audio_common_msgs (vendored definitions)"
    with_heartbeat "building audio_common_msgs" build_interfaces interfaces/audio_common_msgs build/audio_common_msgs
    touch "$VENV/share/audio_common_msgs/roma_ros_vendored"
  fi
  log "4/4 building roma_ros interfaces"
  with_heartbeat "building the interfaces" build_interfaces . build/interfaces -DROMA_ROS_INSTALL_PYTHON=OFF
  # The sources provide roma_ros/__init__.py; rosidl's empty one and its egg-info must go.
  rm -rf "$VENV"/lib/python3.*/site-packages/roma_ros/__init__.py \
    "$VENV"/lib/python3.*/site-packages/roma_ros-*.egg-info
  mark_done interfaces "$key"
fi

"$PY" -c "import rclpy, roma_ros.msg, roma_ros.srv, roma_ros.action, audio_common_msgs.msg" \
  || { echo "setup finished but the interfaces do not import" >&2; exit 1; }
log "ready: $VENV"
