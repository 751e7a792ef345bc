"""python -m lapa_ros <command> ...: the same program as `lapa`."""
import sys

from lapa_ros.cli import main

if __name__ == "__main__":
    sys.exit(main())
