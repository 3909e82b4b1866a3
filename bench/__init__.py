"""`python -m bench`: the runner's speed measured side by side with a plain Keras script.

Benchmarks, not tests: nothing here asserts a timing. CI only checks that `--quick` runs and
writes its table (tests/test_bench.py).
"""
