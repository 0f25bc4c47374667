"""``python -m etc_core.train --config FILE [--resume]`` (also what ``accelerate launch -m`` runs)."""
import sys

from .trainer import main

sys.exit(main())
