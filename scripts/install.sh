#!/usr/bin/env bash
# One install step for lapa_ros: creates .venv and installs pinned dependencies.
# Idempotent: when nothing it depends on changed since the last successful run, it returns at once.
#
#   bash scripts/install.sh            # CPU torch + onnxruntime (dev machines, CI)
#   GPU=1 bash scripts/install.sh      # CUDA torch + onnxruntime-gpu (robot with an NVIDIA GPU)
#   VENV=/path/to/venv bash scripts/install.sh
#
# With a ROS 2 install sourced (ROS_DISTRO set), the venv sees the system rclpy and messages
# (--system-site-packages) and the ROS wheels from PyPI are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
GPU=${GPU:-0}
PYTHON=${PYTHON:-python3}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0"

log() { printf '[install] %s\n' "$*" >&2; }

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' >/dev/null 2>&1; then
  system_ros=1
fi

# The stamp records everything that decides what gets installed; same stamp -> nothing to do.
stamp_input() {
  cat requirements/*.txt setup.py package.xml lapa_ros/interfaces/entry.py   # entry.py: the console scripts
  echo "gpu=$GPU system_ros=$system_ros python=$("$PYTHON" -c 'import sys; print(sys.version)')"
}
stamp=$(stamp_input | sha256sum | cut -c1-16)
stamp_file="$VENV/.lapa-installed"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

# System libraries: EGL for MuJoCo offscreen rendering, libusb for RealSense.
missing=()
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "apt: installing ${missing[*]}"
    (apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1) || \
      (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    log "apt: installing ${missing[*]} (sudo)"
    sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing system packages: ${missing[*]}"
    log "         run: sudo apt-get install ${missing[*]}"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV ($("$PYTHON" --version))"
  if [ "$system_ros" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
# The local package mirrors on some machines make pip warn once per missing index page: drop that noise.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# torch first, so that nothing later can choose another build of it.
if [ "$GPU" = 1 ]; then
  log "torch (CUDA, from $TORCH_INDEX_URL) + onnxruntime-gpu"
  pip uninstall -y onnxruntime >/dev/null 2>&1 || true
  pip install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple torch==2.13.0
  pip install -r requirements/torch-gpu.txt -c requirements/constraints.txt
else
  log "torch (CPU) + onnxruntime"
  pip uninstall -y onnxruntime-gpu >/dev/null 2>&1 || true
  pip install -r requirements/torch-cpu.txt
fi

if [ "$system_ros" = 1 ]; then
  log "ROS 2 $ROS_DISTRO is sourced: using its rclpy and messages"
else
  log "ROS 2 client wheels (rclpy, Fast DDS, common interfaces)"
  pip install -r requirements/ros.txt -c requirements/constraints.txt
fi

log "learning stack, simulator, bag tools"
pip install -r requirements/core.txt -c requirements/constraints.txt
log "lapa_ros (editable)"
pip install --no-deps --no-build-isolation -e .

"$VENV/bin/python" - <<'PY'
import importlib, sys
mods = ["torch", "onnxruntime", "transformers", "mujoco", "metaworld", "rclpy", "rosbags", "lapa_ros", "lapa_models", "lapa_sim"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # report every broken import at once
        bad.append(f"{m}: {e}")
if bad:
    sys.exit("[install] broken imports:\n  " + "\n  ".join(bad))
import torch
print(f"[install] ok: torch {torch.__version__}, python {sys.version.split()[0]}", file=sys.stderr)
PY
echo "$stamp" > "$stamp_file"
