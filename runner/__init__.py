"""The run: compose -> device -> data -> model -> fit -> report.

Nothing imported at package level touches TensorFlow, so `--help`, `--cfg job` and config
errors stay fast. `runner.config.schema` registers the config schemas with Hydra's ConfigStore.
"""
