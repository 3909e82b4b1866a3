"""`python -m runner.summarize <sweep dir>`: rebuild a sweep's summary (runner/record/summarize.py)."""
import sys

from runner.record.summarize import main

if __name__ == "__main__":
    sys.exit(main())
