"""`python -m runner.predict run=<run dir> images=<file|folder|glob> [top_k=3] [--json]`.

One line per image: its path and the top-k classes with their probabilities, after the same
preprocessing as evaluation (decode, RGB, resize to dataset.image_size).
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.checks import IMAGE_SUFFIXES, has_image_signature
from runner.errors import ConfigError
from runner.tools.checkpoint import LoadedRun, load_run, predict_outputs, to_probabilities
from runner.tools.cli import Arguments, Tool, parse_int, run_tool

TOOL = Tool(
    name="predict",
    usage="""
python -m runner.predict run=<run dir> images=<file|folder|glob> [top_k=3] [which=best] [--json]

  run=DIR       a run directory of `python -m runner` (holds .hydra/ and checkpoints/)
  images=PATH   an image file, a folder (its .jpg/.jpeg/.png/.gif/.bmp files, recursively), or a
                quoted glob such as 'photos/*.jpg'
  top_k=K       how many classes per image (default 3)
  which=W       best (default) or last checkpoint
  --json        one JSON object per line instead of text (same as format=json)

Prints: <path>  <class> <probability>  <class> <probability> ...
""",
    options={"run": None, "images": None, "top_k": "3", "which": "best", "format": "text"},
    flags={"--json": ("format", "json")},
)
GLOB_CHARACTERS = set("*?[")


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most probable first


def list_images(spec: str) -> list[Path]:
    """The image files a user named: a file, a folder's image files, or a glob's matches."""
    if GLOB_CHARACTERS & set(spec):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
    elif Path(spec).is_dir():
        files = sorted(p for p in Path(spec).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif Path(spec).is_file():
        files = [Path(spec)]
    else:
        raise ConfigError(f"images={spec!r} is neither a file, a folder nor a glob that exists.")
    if not files:
        raise ConfigError(
            f"images={spec!r} names no image files ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    not_images = [str(f) for f in files if not has_image_signature(f)]
    if not_images:
        raise ConfigError(
            f"{', '.join(not_images[:5])}{' and more' if len(not_images) > 5 else ''} "
            "is not a JPEG/PNG/GIF/BMP image. Name image files only."
        )
    return files


def read_image(path: Path, image_size: int):
    """Evaluation preprocessing of one file; an undecodable file is named."""
    import tensorflow as tf

    from data.pipeline import decode_and_resize

    try:
        return decode_and_resize(tf.io.read_file(str(path)), image_size)
    except tf.errors.InvalidArgumentError:
        raise ConfigError(
            f"{path} is not a readable image (decoding it failed): re-encode or remove it."
        ) from None


def predict_files(run: LoadedRun, files: list[Path]) -> np.ndarray:
    """Class probabilities [files, classes] for image files, batch_size images at a time."""
    size, batch = run.cfg.dataset.image_size, run.cfg.batch_size
    batches = (
        np.stack([read_image(path, size) for path in files[start:start + batch]])
        for start in range(0, len(files), batch)
    )
    return to_probabilities(predict_outputs(run, batches), run.cfg.model.from_logits)


def top_k(files: list[Path], probabilities: np.ndarray, class_names: list[str], k: int) -> list[Prediction]:
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        Prediction(str(path), [(class_names[i], float(row[i])) for i in indices])
        for path, row, indices in zip(files, probabilities, order)
    ]


def format_prediction(prediction: Prediction, output_format: str) -> str:
    if output_format == "json":
        top = [{"class": name, "probability": round(p, 6)} for name, p in prediction.top]
        return json.dumps({"path": prediction.path, "top_k": top})
    return "\t".join([prediction.path, *(f"{name} {p:.4f}" for name, p in prediction.top)])


def _predict_command(args: Arguments) -> None:
    options = args.options
    if options["format"] not in ("text", "json"):
        raise ConfigError(f"format={options['format']!r} is not one of text, json.")
    k = parse_int("top_k", options["top_k"])
    files = list_images(options["images"])  # before loading TensorFlow and the model
    run = load_run(options["run"], options["which"], args.overrides)
    predictions = top_k(files, predict_files(run, files), run.class_names, k)
    for prediction in predictions:
        print(format_prediction(prediction, options["format"]))


if __name__ == "__main__":
    run_tool(TOOL, _predict_command)
