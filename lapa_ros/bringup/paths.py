"""Where the package's data lives: config/, launch/, urdf/ in a source checkout or an install.

Source checkout (editable install, tests): the folders beside the package. Installed by colcon or
pip: share/lapa_ros under the install prefix (found through the ament index when available).
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "lapa_ros"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]   # lapa_ros/bringup/paths.py -> the checkout


@lru_cache(maxsize=1)
def share_dir() -> Path:
    if (_SOURCE_ROOT / "config").is_dir() and (_SOURCE_ROOT / "package.xml").is_file():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):   # OSError: no ament index (AMENT_PREFIX_PATH unset)
            pass
    except ImportError:
        pass
    candidate = Path(sys.prefix) / "share" / PACKAGE
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"cannot find the {PACKAGE} share directory (config/, launch/, urdf/); "
                            "install the package (make install, or colcon build) or run from the source tree")


def config_file(name: str) -> Path:
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return path


def urdf_file(name: str) -> Path:
    path = share_dir() / "urdf" / name
    if not path.is_file():
        raise FileNotFoundError(f"robot description not found: {path}")
    return path
