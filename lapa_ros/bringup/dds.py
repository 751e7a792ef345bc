"""The DDS settings lapa_ros's own commands, tests and benchmarks run with (no rclpy import: they
must be in the environment before rclpy starts).

  FASTDDS_DEFAULT_PROFILES_FILE  config/fastdds.xml: shared memory big enough for camera frames
  FASTDDS_BUILTIN_TRANSPORTS     LARGE_DATA, for processes that do not read the profile

Values already set by the user are kept.
"""
from __future__ import annotations

import os
from typing import MutableMapping

from lapa_ros.bringup.paths import config_file


def dds_defaults(env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Set the defaults in `env` (this process's environment unless given) where unset; returns env."""
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_file("fastdds.xml")))
    return env
