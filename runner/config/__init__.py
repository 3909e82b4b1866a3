"""What can be chosen: the config's schema (checked while Hydra composes), the precision table, the
config's keys, and the Optuna study a sweep continues. The bottom of the runner: nothing here
imports the rest of it (runner/preflight.py checks what needs devices, models or data). No
TensorFlow here."""
