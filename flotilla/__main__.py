"""`python -m flotilla` is the `flotilla` command."""

import sys

from flotilla.cli import main

sys.exit(main())
