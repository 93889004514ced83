#!/usr/bin/env python3
"""nqflow scheduler: run | once | window | backfill | demo | status | alerts. See README.md."""

import sys

from nqflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
