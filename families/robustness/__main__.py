"""`python -m vislab.families.robustness ...` = `vislab robustness ...` (bad input: one line each, exit 2)."""

from __future__ import annotations

import sys

from vislab.core.errors import ConfigError
from vislab.families.robustness.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as e:
        for line in e.problems:
            print(f"vislab: error: {line}", file=sys.stderr)
        sys.exit(2)
