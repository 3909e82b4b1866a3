"""`python -m runner [overrides]`: a thin Hydra shell around runner.train.train."""

import sys

import hydra
from omegaconf import DictConfig

import runner.schema  # noqa: F401  (registers the config schemas)
from runner.errors import ConfigError


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from runner.train import train

    try:
        metrics = train(cfg)
    except ConfigError:
        sys.exit(2)  # train() already logged the one-paragraph message
    return metrics["val_accuracy"]


if __name__ == "__main__":
    main()
