"""Code checks with maintained tools, in the suite so CI runs them:
- import-linter (.importlinter): teleop -> lapa_ros -> lapa_sim -> lapa_models one way only; no ROS 2 in
  the models, the simulator or lapa_ros's pure core; no torch in the on-robot runtime and chunk blender
  (static: lazy imports inside functions count too);
- ruff (ruff.toml): pyflakes, pycodestyle, bugbear."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name(tool)), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    result = _run("lint-imports", "--no-cache", "--config", str(ROOT / ".importlinter"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout, result.stdout[-2000:]


def test_lint_is_clean():
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
