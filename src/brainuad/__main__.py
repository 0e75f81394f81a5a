"""``python -m brainuad`` (also what ``torchrun -m brainuad`` runs)."""

import sys

from brainuad.cli import main

sys.exit(main())
