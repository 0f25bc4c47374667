#!/usr/bin/env python3
"""The first command (etc_vcut_dev.demo); run it after scripts/setup.sh, which installs the development package."""
import sys

from etc_vcut_dev.demo import main

if __name__ == "__main__":
    sys.exit(main())
