"""`python -m loadtest ...` (the same commands as `flotilla loadtest ...`)."""

import sys

from loadtest.cli import build_parser, main

sys.exit(main(build_parser().parse_args()))
