"""What can be chosen: the config's schema (checked while Hydra composes), the checks that need
more than one key or a file, and the Optuna study a sweep continues. No TensorFlow here."""
