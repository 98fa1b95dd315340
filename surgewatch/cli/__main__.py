"""`python -m surgewatch.cli`: the `surgewatch` command."""

import sys

from surgewatch.cli import main

sys.exit(main())
