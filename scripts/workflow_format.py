#!/usr/bin/env python3
"""API <-> UI workflow conversion (etc_vcut_dev.workflow_format)."""
import sys

from etc_vcut_dev.workflow_format import main

if __name__ == "__main__":
    sys.exit(main())
