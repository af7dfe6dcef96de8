"""`python -m sync`: the CLI of sync/cli.py; the process exits with main()'s code."""

import sys

from .cli import main

sys.exit(main())
