"""`python -m bench.decode_check [--images N]`: what decoding every image before training costs
(data/decode_check.py) on an image folder of N JPEGs (default 10,000, 320x240 like cats_vs_dogs'
typical photo, two classes), the first time and again with the cache of what decoded, and beside
it what one pass of the training pipeline's own decoding costs (the floor any check pays).
Prints one Markdown table for bench/results.md."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from data.checks import list_image_folder
from data.decode_check import check_images_decode
from data.pipeline import decode


def write_jpegs(root: Path, images: int, shape: tuple[int, int]) -> Path:
    """`root/<class>/<n>.jpg`: noise JPEGs, the encoder's worst case for size."""
    rng = np.random.default_rng(0)
    for n in range(images):
        folder = root / ("cat" if n % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        (folder / f"{n}.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return root


def seconds(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(images: int, work_dir: Path) -> dict[str, float]:
    root = write_jpegs(work_dir / "images", images, (240, 320))
    _, files = list_image_folder(str(root))
    paths = [f for f, _ in files]
    cache = str(work_dir / "cache")
    one_pass = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).map(
        lambda p: decode(tf.io.read_file(p)), num_parallel_calls=tf.data.AUTOTUNE)
    return {
        "pipeline pass (decode only, tf.data)": seconds(lambda: [None for _ in one_pass]),
        "check, first run": seconds(lambda: check_images_decode(paths, str(root), cache)),
        "check, second run (cached)": seconds(lambda: check_images_decode(paths, str(root), cache)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_check", description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    images = parser.parse_args().images
    with tempfile.TemporaryDirectory() as work:
        figures = measure(images, Path(work))
    floor = figures["pipeline pass (decode only, tf.data)"]
    print(f"| {images} JPEGs, 320x240 | seconds | x one pipeline pass |\n|---|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} | {value / floor:.2f} |")


if __name__ == "__main__":
    main()
