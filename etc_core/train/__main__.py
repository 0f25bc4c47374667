"""``python -m etc_core.train --config FILE [--resume]`` (also what ``accelerate launch -m`` runs)."""
import sys

from .command import main

sys.exit(main())
