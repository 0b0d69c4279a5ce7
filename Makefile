# The two commands: `make demo` (the main job) and `make test`. Both set up on first use.
VENV := .venv
PY := $(VENV)/bin/python
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds.xml

.PHONY: setup test demo bench lock clean

setup:
	@bash scripts/setup.sh

# The colcon build is also checked against ROS 2 Jazzy (a second venv; ~15 s to create).
JAZZY_VENV := .venv-jazzy

test: setup
	@bash scripts/jazzy_venv.sh $(JAZZY_VENV)
	ROMA_JAZZY_VENV=$(CURDIR)/$(JAZZY_VENV) $(PY) -m pytest tests -q

demo: setup
	$(VENV)/bin/roma demo

# Every benchmark in bench/: bench/results/results.json and results.md (numbers for the README).
bench: setup
	$(PY) bench/run_all.py

# Re-pin every dependency from requirements/base.in (needs the package registries).
lock:
	rm -rf /tmp/roma_lock_venv && python3.11 -m venv /tmp/roma_lock_venv
	/tmp/roma_lock_venv/bin/pip install -q -r requirements/base.in
	/tmp/roma_lock_venv/bin/python scripts/freeze.py > requirements/lock.txt

clean:
	rm -rf build install log $(VENV) $(JAZZY_VENV)
