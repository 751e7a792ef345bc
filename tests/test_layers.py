"""The import contracts of .importlinter, checked with import-linter (static: lazy imports inside
functions count too): teleop -> lapa_ros -> lapa_sim -> lapa_models one way only; no ROS 2 in the
models, the simulator or lapa_ros's pure core; no torch in the on-robot runtime and chunk blender."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout, result.stdout[-2000:]
