#!/usr/bin/env bash
# Robots run ROS 2 Humble (Python 3.10) to Jazzy (Python 3.12): check the code for both.
#  1. vermin: no language feature or stdlib API newer than 3.10.
#  2. byte-compile with every interpreter from 3.10 to 3.12 present on this machine.
#  3. the pure-Python tests (safety, chunking, alignment, image conversion; numpy and hypothesis) under 3.10
#     and 3.12 when those interpreters exist, in small cached venvs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SRC="lapa_ros lapa_models lapa_sim teleop launch"

"$VENV/bin/vermin" -q --no-tips --violations -t=3.10- --eval-annotations --backport dataclasses $SRC \
  || { echo "[compat] vermin: code needs a Python newer than 3.10 (see above)"; exit 1; }
# An interpreter for version $1: on PATH, or from pyenv (whose shims refuse versions not selected).
find_python() {
  local v=$1 c
  for c in "$(command -v "python$v" 2>/dev/null)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
    [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'pass' 2>/dev/null && { echo "$c"; return; }
  done
}
checked=()
for v in 3.10 3.11 3.12; do
  py=$(find_python "$v"); [ -n "$py" ] || continue
  for d in $SRC; do "$py" -m compileall -q -d "$d" -x '/\.' "$d" >/dev/null || { echo "[compat] python$v cannot compile $d"; exit 1; }; done
  checked+=("$v")
done
if [ -d tests/pure ]; then
  for v in 3.10 3.12; do
    py=$(find_python "$v"); [ -n "$py" ] || continue
    env_dir=".venv-py${v/./}"
    if ! "$env_dir/bin/python" -c "import numpy, yaml, pytest, pytest_timeout, hypothesis" 2>/dev/null; then
      [ -x "$env_dir/bin/python" ] || "$py" -m venv "$env_dir"
      "$env_dir/bin/python" -m pip -q --disable-pip-version-check install numpy PyYAML pytest pytest-timeout \
        hypothesis 2> >(grep -v 'is ignored: it is neither' >&2)
    fi
    PYTHONPATH=. "$env_dir/bin/python" -m pytest -q -p no:cacheprovider tests/pure
  done
fi
echo "[compat] ok: vermin >= 3.10; compiled with python ${checked[*]}"
