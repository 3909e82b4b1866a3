"""`hydra/launcher=device_pool`: a sweep's jobs in parallel, one device (GPU, NPU or CPU core set)
per job, each job in a process of its own started with only its device visible (docs/sweeps.md).

No TensorFlow here: the jobs import it, in their own processes, after their device is set.
"""
