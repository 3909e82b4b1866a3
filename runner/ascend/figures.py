"""What a run leaves for the Ascend scripts: metrics.json's Ascend figures (ActualFPS,
TrainingTime, ..., CaseName), and for a `modelzoo=` run its recipe's console lines while fit()
runs, the figures as that recipe's scripts read them from those lines, and the loss file they
extract (runner/ascend/modelzoo.py holds the recipes' formats).

runner/train.py holds one AscendFigures per run: its callbacks go into fit(), its figures into
metrics.json. runner/ascend/scripts.py reads them back from metrics.json for the scripts' closing
lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from runner.ascend.modelzoo import CONSOLES, NETWORKS, ConsoleLines, case_name, loss_file_name
from runner.keras2 import keras


def ascend_figures(metrics: dict[str, Any], seconds_per_step: float, rank_size: int,
                   case_kind: str, network: str | None = None) -> dict[str, Any]:
    """The figures the Ascend scripts' shell wrappers report, under their names, as the runner
    measures them (a `modelzoo=` run replaces the first four by its recipe's: runner/ascend/modelzoo.py).

    ActualFPS is the whole run's steady-state throughput (the global batch per step);
    TrainingTime milliseconds per step; TrainAccuracy the final evaluation's val_accuracy;
    ActualLoss the last epoch's mean training loss; E2ETrainingTime the run's seconds.
    CaseName starts with the ModelZoo network's name, or the model's when there is none.
    """
    return {
        "ActualFPS": metrics["images_per_sec"],
        "TrainingTime": round(seconds_per_step * 1000, 2),
        "TrainAccuracy": metrics["val_accuracy"],
        "ActualLoss": metrics["train_loss"],
        "E2ETrainingTime": metrics["wall_seconds"],
        "DeviceType": metrics["device"],
        "RankSize": rank_size,
        "BatchSize": metrics["batch_size"],
        "CaseName": case_name(network or metrics["model"], metrics["batch_size"], rank_size, case_kind),
    }


class ModelZooLines(keras.callbacks.Callback):
    """Hands Keras' hooks to a recipe's ConsoleLines (runner/ascend/modelzoo.py), which prints the
    ModelZoo train.py's lines and keeps the figures its scripts read from them."""

    def __init__(self, console: ConsoleLines):
        super().__init__()
        self.console = console

    def on_train_begin(self, logs=None):
        self.console.train_begin(self.params)

    def on_epoch_begin(self, epoch, logs=None):
        self.console.epoch_begin(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self.console.batch_begin(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.console.batch_end(batch, float((logs or {}).get("loss", float("nan"))))

    def on_epoch_end(self, epoch, logs=None):
        self.console.epoch_end(epoch, {k: float(v) for k, v in (logs or {}).items()})

    def on_train_end(self, logs=None):
        self.console.train_end()


class AscendFigures:
    """One run's Ascend figures, from fit() to metrics.json. case_kind: CaseName's suffix; for a
    `modelzoo=` run, console: its recipe's ConsoleLines and network: the recipe's ModelZoo name."""

    def __init__(self, case_kind: str, console: ConsoleLines | None = None, network: str | None = None):
        self.case_kind, self.console, self.network = str(case_kind), console, network

    @classmethod
    def for_run(cls, cfg: DictConfig) -> AscendFigures:
        """From the top-level keys case_kind and modelzoo; a recipe's console counts the run's
        batch_size, log_steps and epochs."""
        if cfg.modelzoo is None:
            return cls(cfg.case_kind)
        recipe = str(cfg.modelzoo)
        console = CONSOLES[recipe](cfg.batch_size, cfg.log_steps, cfg.epochs)
        return cls(cfg.case_kind, console, NETWORKS[recipe])

    @property
    def prints_epochs(self) -> bool:
        """A `modelzoo=` run prints Keras 2.6's verbose=2 epoch lines itself, on both stacks:
        fit()'s own progress output stays off."""
        return self.console is not None

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [ModelZooLines(self.console)] if self.console is not None else []

    def figures(self, metrics: dict[str, Any], seconds_per_step: float, rank_size: int,
                run_dir: Path) -> dict[str, Any]:
        """metrics.json's Ascend figures; a `modelzoo=` run's are its recipe's, and it writes the
        loss file that recipe's scripts extract into run_dir."""
        figures = ascend_figures(metrics, seconds_per_step, rank_size, self.case_kind, self.network)
        if self.console is not None:
            figures.update(self.console.figures(self.case_kind))
            losses = "".join(f"{loss}\n" for loss in self.console.losses(self.case_kind))
            (run_dir / loss_file_name(figures["CaseName"])).write_text(losses)
        return figures
