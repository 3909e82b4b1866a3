"""`python -m runner.export run=<run dir> [out=<folder>] [which=best]`: a self-contained SavedModel.

Two serving signatures, both applying the evaluation preprocessing inside the graph (decode,
RGB, resize to dataset.image_size; the model rescales pixels itself):
  serving_default(image_bytes: string[N])   encoded JPEG/PNG/GIF/BMP files
  serve_images(images: uint8[N, H, W, 3])   decoded pixels, any H and W
Each returns probabilities float32[N, C], class_names string[N, C] (the columns' names, repeated
per row so every output is batched) and top_class string[N]. A model ending in logits (BiT) has
the softmax applied in the signature.
"""

import os
from pathlib import Path

from runner.errors import ConfigError
from runner.tools.checkpoint import LoadedRun, load_run
from runner.tools.cli import Arguments, Tool, run_tool

TOOL = Tool(
    name="export",
    usage="""
python -m runner.export run=<run dir> [out=<folder>] [which=best] [key=value ...]

  run=DIR     a run directory of `python -m runner` (holds .hydra/ and checkpoints/)
  out=DIR     where the SavedModel goes (default <run>/export/<which>); must not exist yet
  which=W     best (default) or last checkpoint

Load it anywhere with TensorFlow alone:
  m = tf.saved_model.load(DIR)
  m.signatures["serving_default"](image_bytes=tf.constant([open("a.jpg", "rb").read()]))
""",
    options={"run": None, "out": "", "which": "best"},
)


def serving_functions(run: LoadedRun) -> dict:
    """name -> tf.function with an input signature, closing over the model and class names."""
    import tensorflow as tf

    from data.pipeline import decode_and_resize

    image_size = run.cfg.dataset.image_size
    class_names = tf.constant(run.class_names)
    from_logits = bool(run.cfg.model.from_logits)
    pixel_spec = tf.TensorSpec((image_size, image_size, 3), tf.float32)

    def classify(images):
        pixels = tf.map_fn(lambda image: decode_and_resize(image, image_size), images,
                           fn_output_signature=pixel_spec)
        outputs = tf.cast(run.model(pixels, training=False), tf.float32)
        probabilities = tf.nn.softmax(outputs) if from_logits else outputs
        return {
            "probabilities": probabilities,
            "class_names": tf.tile(class_names[tf.newaxis], [tf.shape(probabilities)[0], 1]),
            "top_class": tf.gather(class_names, tf.argmax(probabilities, axis=-1)),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        return classify(image_bytes)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(images):
        return classify(images)

    return {"serving_default": serve_bytes, "serve_images": serve_images}


def default_export_dir(run_dir: Path, which: str) -> Path:
    return run_dir / "export" / which


def check_out_dir(out: Path) -> None:
    """out must be a new (or empty) folder that can be written: checked before the slow part."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={str(out)!r} already exists: remove it or pass another out=.")
    nearest = next(p for p in (out, *out.parents) if p.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(
            f"out={str(out)!r} cannot be written: {nearest} is not a folder this user can write "
            "into. Pass out= a new folder in a writable place, e.g. out=~/exports/model."
        )


def export_run(run: LoadedRun, out: Path) -> Path:
    """Write the run's SavedModel to out (a new folder) and return it."""
    import tensorflow as tf

    check_out_dir(out)
    functions = serving_functions(run)
    module = tf.Module()
    module.model = run.model  # tracks the weights the signatures use
    for name, function in functions.items():
        setattr(module, name, function)
    tf.saved_model.save(module, str(out), signatures=functions)
    return out


def _export_command(args: Arguments) -> None:
    options = args.options
    run_dir = Path(options["run"]).expanduser()
    out = Path(options["out"]).expanduser() if options["out"] else None
    out = out or default_export_dir(run_dir, options["which"])
    check_out_dir(out)  # before the slow part
    print(f"exporting {run_dir} ({options['which']} checkpoint) to {out}: loading the model, then "
          "tracing and writing its serving functions (up to a minute)...", flush=True)
    run = load_run(run_dir, options["which"], args.overrides)
    print(f"SavedModel of {run.run_dir} ({run.which} checkpoint) -> {export_run(run, out)}")


if __name__ == "__main__":
    run_tool(TOOL, _export_command)
