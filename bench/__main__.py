"""`python -m bench`: run every benchmark and write bench/RESULTS.md (see bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
