"""`python -m runner.summarize <sweep dir>`: rebuild a sweep's summary (runner/record/sweep_summary.py)."""
import sys

from runner.record.sweep_summary import main

if __name__ == "__main__":
    sys.exit(main())
