"""`python -m surgewatch`: the `surgewatch` command."""

import sys

from surgewatch.cli import main

sys.exit(main())
