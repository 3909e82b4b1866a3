"""Where the run computes: the strategy for CPU/GPU/NPU, the NPU adapter's options, precision
policies, debug tools on each device, and the worker's rank."""
