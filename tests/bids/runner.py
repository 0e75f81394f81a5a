"""``brainuad`` with the fixed registration of helpers.py (for tests run in subprocesses): ``python runner.py ARGS``."""

import sys

from helpers import fixed_registration

from brainuad.cli import main
from brainuad.preprocess import pipeline

pipeline.estimate_transform = fixed_registration
sys.exit(main(sys.argv[1:]))
