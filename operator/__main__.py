"""`python -m modelyard.operator ...`, the same as `modelyard operator ...`."""
import sys

from .main import run

sys.exit(run(sys.argv[1:]))
