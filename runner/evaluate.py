"""`python -m runner.evaluate run=<run dir> [split=...] [which=best|last] [key=value ...]`.

Evaluates a run's checkpoint on a split and writes `eval/<split>/` into the run directory:
metrics.json (accuracy, loss, per-class precision/recall/f1/support, confusion matrix),
per_class.csv, per_class.md and confusion_matrix.png.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.errors import ConfigError
from runner.record.run_folder import EVAL_DIR, METRICS_FILE, write_json_atomic
from runner.tools.checkpoint import LoadedRun, load_run, predict_outputs, to_probabilities
from runner.tools.cli import Arguments, Tool, run_tool

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOOL = Tool(
    name="evaluate",
    usage="""
python -m runner.evaluate run=<run dir> [split=val] [which=best] [key=value ...]

  run=DIR      a run directory of `python -m runner` (holds .hydra/ and checkpoints/)
  split=S      val (default: the run's validation split), train (the run's training split, no
               augmentation), or any TFDS split string for a TFDS dataset: test, train[85%:], ...
  which=W      best (default: the epoch with the best val_accuracy) or last (the final epoch)
  key=value    overrides the run's config, e.g. dataset.data_dir=/data/elsewhere batch_size=16

Writes <run>/eval/<split>/{metrics.json, per_class.csv, per_class.md, confusion_matrix.png}
(<run>/eval/<split>-last/ for which=last).
""",
    options={"run": None, "split": "val", "which": "best"},
)
MAX_ANNOTATED_CLASSES = 20  # beyond this the confusion matrix's cells are too small for numbers


@dataclass
class Predictions:
    outputs: np.ndarray  # the model's raw outputs [examples, classes]
    labels: np.ndarray  # integer labels [examples]
    split_spec: str  # what was read, e.g. "train[85%:]"


def split_folder_name(split: str) -> str:
    """A folder name for a split string: train[85%:] -> train_85pct."""
    return re.sub(r"[^\w.-]+", "_", split.replace("%", "pct")).strip("_") or "split"


def _split_source(run: LoadedRun, split: str):
    """(unbatched split, its spec) from the run's own data source."""
    from runner.fit.datasets import load_source

    dataset_cfg = run.cfg.dataset
    _check_data_still_there(run, dataset_cfg)
    if split in ("val", "train"):
        source = load_source(dataset_cfg, run.cfg.seed)
        spec = dataset_cfg.get(f"{split}_split", split)
        return (source.val if split == "val" else source.train), spec
    if dataset_cfg.source != "tfds":
        raise ConfigError(
            f"split={split!r}: dataset={dataset_cfg.name} (source {dataset_cfg.source}) has only the "
            "run's own splits; pass split=val or split=train."
        )
    dataset_cfg = dataset_cfg.copy()  # load_source reads the TFDS split string from val_split
    dataset_cfg.val_split = split
    try:
        return load_source(dataset_cfg, run.cfg.seed).val, split
    except (ValueError, KeyError) as error:
        raise ConfigError(
            f"split={split!r} cannot be read from {dataset_cfg.name} in {dataset_cfg.data_dir}: {error}"
        ) from None


def _check_data_still_there(run: LoadedRun, dataset_cfg: Any) -> None:
    """The run's config names where its data was: if that is gone, the data moved (or was
    deleted), and the fix is to say where it is now, not to prepare it again."""
    key = {"image_folder": "path", "tfds": "data_dir"}.get(str(dataset_cfg.source))
    if key and not Path(str(dataset_cfg[key])).expanduser().exists():
        raise ConfigError(
            f"{run.run_dir} was trained on data in dataset.{key}={dataset_cfg[key]!r}, which is not "
            f"there any more. If it moved, pass its new place: python -m runner.evaluate "
            f"run={run.run_dir} dataset.{key}=<where it is now>."
        )


def predict_split(run: LoadedRun, split: str) -> Predictions:
    """Raw outputs and labels over a split, preprocessed as the run's validation data was."""
    from data.pipeline import PipelineSpec, make_batches

    unbatched, spec = _split_source(run, split)
    batches = make_batches(
        unbatched,
        PipelineSpec(run.cfg.dataset.image_size, run.cfg.batch_size, len(run.class_names)),
        training=False,
    )
    labels = []

    def images_keeping_labels():
        for images, batch_labels in batches:
            labels.append(batch_labels.numpy())
            yield images

    outputs = predict_outputs(run, images_keeping_labels())
    if not labels:
        raise ConfigError(f"split={split!r} ({spec}) of {run.cfg.dataset.name} holds no images.")
    return Predictions(outputs, np.concatenate(labels).astype(np.int64), str(spec))


def mean_loss(run: LoadedRun, predictions: Predictions) -> float:
    """The run's own training loss (label smoothing, logits) averaged over the split, as Keras does."""
    import tensorflow as tf

    from runner.fit.optim import build_loss, uses_one_hot_labels

    labels = predictions.labels
    if uses_one_hot_labels(run.cfg.model):
        labels = tf.one_hot(labels, len(run.class_names))
    return float(build_loss(run.cfg.model)(labels, predictions.outputs))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    return {
        "accuracy": float((predicted == labels).mean()),
        "examples": int(len(labels)),
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean())},
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
    }


def write_per_class_tables(per_class: dict[str, dict], folder: Path) -> None:
    columns = ["precision", "recall", "f1", "support"]
    with open(folder / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *columns])
        for name, row in per_class.items():
            writer.writerow([name, *(row[c] for c in columns)])
    lines = ["| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        for name, row in per_class.items()
    ]
    (folder / "per_class.md").write_text("\n".join(lines) + "\n")


def confusion_figure(matrix: list[list[int]], class_names: list[str], title: str) -> Figure:
    """The confusion matrix as a picture: rows true, columns predicted; counts in the cells up to
    MAX_ANNOTATED_CLASSES classes."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global figure state

    counts = np.array(matrix)
    side = max(4.0, 0.5 * len(class_names) + 2)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(class_names) <= MAX_ANNOTATED_CLASSES:
        for (row, col), count in np.ndenumerate(counts):
            colour = "white" if count > counts.max() / 2 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> None:
    confusion_figure(matrix, class_names, title).savefig(path, dpi=100)


def evaluate_run(run: LoadedRun, split: str = "val") -> dict[str, Any]:
    """Evaluate a loaded run on a split; write and return eval/<split>/metrics.json's content."""
    predictions = predict_split(run, split)
    probabilities = to_probabilities(predictions.outputs, run.cfg.model.from_logits)
    metrics = {
        "split": split,
        "split_spec": predictions.split_spec,
        "checkpoint": run.which,
        "loss": mean_loss(run, predictions),
        **classification_metrics(predictions.labels, probabilities, run.class_names),
    }
    # eval/val/ holds the default (best) checkpoint's figures; which=last gets eval/val-last/.
    suffix = "" if run.which == "best" else f"-{run.which}"
    folder = run.run_dir / EVAL_DIR / (split_folder_name(split) + suffix)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / METRICS_FILE, metrics)
    write_per_class_tables(metrics["per_class"], folder)
    plot_confusion_matrix(
        metrics["confusion_matrix"], run.class_names, folder / "confusion_matrix.png",
        f"{run.cfg.model.name} on {run.cfg.dataset.name} {predictions.split_spec} ({run.which})",
    )
    metrics["folder"] = str(folder)
    return metrics


def _evaluate_command(args: Arguments) -> None:
    options = args.options
    run = load_run(options["run"], options["which"], args.overrides)
    metrics = evaluate_run(run, options["split"])
    print(
        f"accuracy {metrics['accuracy']:.4f} loss {metrics['loss']:.4f} on {metrics['examples']} "
        f"images of {metrics['split_spec']} ({run.which} checkpoint) -> {metrics['folder']}"
    )


if __name__ == "__main__":
    run_tool(TOOL, _evaluate_command)
