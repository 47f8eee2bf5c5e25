"""Compare runs: `python report.py MULTIRUN_DIR [RUN_DIR ...] [--out DIR]` (see README)."""

import sys

from audiolstm.cli import report

if __name__ == "__main__":
    sys.exit(report())
