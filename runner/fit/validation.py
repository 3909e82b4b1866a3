"""The run's final validation figures: the last epoch's, or restored weights evaluated afresh."""
from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def final_validation(model, val, history: list[dict[str, float]], best_restored: bool) -> dict[str, float]:
    """The final weights' loss and accuracy on the validation split. When they are the last
    epoch's, fit() validated them already: history.csv's last row holds the figures, and a second
    evaluation would only repeat them (seconds on the CPU, most of a short run's closing). Early
    stopping restores the best epoch's weights: evaluated again unless the best is the last."""
    if history and {"val_loss", "val_accuracy"} <= history[-1].keys() and not (
            best_restored and best_epoch(history) != len(history) - 1):
        return {"loss": history[-1]["val_loss"], "accuracy": history[-1]["val_accuracy"]}
    return model.evaluate(val, return_dict=True, verbose=0)


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch whose weights early stopping restores: the first of the highest val_accuracy
    (it keeps a new best only when strictly better, as the best checkpoint does)."""
    accuracies = [row["val_accuracy"] for row in history]
    return accuracies.index(max(accuracies))


def training_divergence(history: list[dict[str, float]]) -> str | None:
    """TerminateOnNaN ends fit() early and quietly: what it stopped on, or None."""
    if history and not math.isfinite(history[-1].get("loss", 0.0)):
        return (f"The training loss became {history[-1]['loss']} in epoch {int(history[-1]['epoch']) + 1}"
                " and training stopped (TerminateOnNaN)")
    return None


def warn_if_not_a_number(final: dict[str, float]) -> None:
    """The final weights' validation loss can be inf or NaN while training's is finite: after a
    few steps, BatchNorm's moving statistics are still far from the data's, and in inference mode
    activations grow layer by layer (a smoke run of DenseNet-121 at batch 2 does this). The run
    is kept (its speed figures are sound); a sweeper gets no score from it (runner.__main__)."""
    if not math.isfinite(final["loss"]):
        log.warning(
            "the final weights' validation loss is %s: their predictions are not usable. After few "
            "steps or with tiny batches, BatchNorm's moving statistics are not yet the data's: train "
            "longer or with a larger batch_size; if training's loss grew too, lower "
            "model.learning_rate.", final["loss"])
