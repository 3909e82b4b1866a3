"""`python -m bench`: the runner's speed measured side by side with a plain Keras script.

Benchmarks, not tests: nothing here asserts a timing. CI only checks, on both stacks, that
`--quick` runs and writes its table (tests/test_bench.py). `python -m bench.stacks` runs the
bench on several interpreters (one TensorFlow each) in turn and compares them.
"""
