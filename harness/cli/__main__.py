"""`python -m harness.cli` runs the `wanbench` command."""

import sys

from harness.cli.main import main

sys.exit(main())
