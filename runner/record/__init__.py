"""The run's record: its folder's lock, status, metrics and history, resuming, experiment
tracking and sweep summaries. No TensorFlow at import."""
