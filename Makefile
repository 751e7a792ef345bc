# lapa_ros: the two commands a newcomer needs are `make demo` and `make test`; both install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
# Keep DDS traffic on this machine for demos and tests (set ROS_AUTOMATIC_DISCOVERY_RANGE yourself on a robot).
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
# Shared memory big enough for camera frames (see the file); export it for other camera drivers too.
export FASTDDS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds.xml

.PHONY: install demo test test-fast bench compat clean help

help:
	@echo "make demo     run the whole stack on the simulated arm (installs on first use)"
	@echo "make test     run the test suite (installs on first use)"
	@echo "make bench    print benchmark JSON (sim, models, ROS pipeline)"
	@echo "make install  create .venv with pinned dependencies (GPU=1 for a CUDA robot)"

install:
	@bash scripts/install.sh

demo: install
	$(VENV)/bin/lapa demo

test: install
	$(PY) -m pytest tests
	@$(MAKE) --no-print-directory compat

# Code must run on Python 3.10 (Humble) to 3.12 (Jazzy): byte-compile with each interpreter found.
compat:
	@bash scripts/check_python_versions.sh

bench: install
	$(VENV)/bin/lapa bench sim

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
