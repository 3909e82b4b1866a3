"""Every image of an image folder decoded once before training, as the pipeline decodes it.

A file can start like a JPEG and still be cut short: the magic-byte check (data/checks.py) passes
it, and training would die at the step that reads it, naming no file. So each file is decoded here
first, on every core, and a bad one is named with TensorFlow's reason. Files that decoded are
remembered by size and modification time in a small JSON file per dataset folder
(dataset.checked_images_cache), so the next run over an unchanged folder decodes nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tensorflow as tf

from data.pipeline import decode
from runner.errors import ConfigError

log = logging.getLogger(__name__)


def check_images_decode(files: Sequence[Path], dataset_path: str, cache_dir: str | None) -> None:
    """Raise ConfigError naming each file of `files` that does not decode; remember the rest."""
    cache_file = _cache_file(cache_dir, dataset_path) if cache_dir else None
    known = _read_cache(cache_file)
    stamps = {str(f): _stamp(f) for f in files}
    to_decode = [f for f in stamps if known.get(f) != stamps[f]]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # TF's ops release the GIL
        reasons = dict(zip(to_decode, pool.map(decode_error, to_decode)))
    bad = {f: reason for f, reason in reasons.items() if reason is not None}
    log.info("images: %d decoded before training, %d unchanged since they last decoded",
             len(to_decode), len(stamps) - len(to_decode))
    if cache_file is not None:
        _write_cache(cache_file, {f: stamp for f, stamp in stamps.items() if f not in bad})
    if bad:
        raise ConfigError(_bad_images_message(bad, dataset_path))


def decode_error(path: str) -> str | None:
    """Why TensorFlow cannot decode the file at path (its first line), or None if it can."""
    try:
        decode(tf.io.read_file(path))
    except tf.errors.OpError as error:
        return error.message.strip().splitlines()[0]
    return None


def _bad_images_message(bad: dict[str, str], dataset_path: str) -> str:
    shown = "; ".join(f"{f} ({reason})" for f, reason in sorted(bad.items())[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (
        f"{len(bad)} image(s) in dataset.path={dataset_path!r} cannot be decoded, so training "
        f"would stop at the first of them: {shown}{more}. Remove them, or re-encode them "
        "(e.g. open and save again with an image editor or Pillow)."
    )


def _stamp(path: Path) -> list[int]:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _cache_file(cache_dir: str, dataset_path: str) -> Path:
    """One file per dataset folder, named by its absolute path."""
    folder = str(Path(dataset_path).expanduser().resolve())
    return Path(cache_dir).expanduser() / f"{hashlib.sha256(folder.encode()).hexdigest()[:16]}.json"


def _read_cache(cache_file: Path | None) -> dict[str, list[int]]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):  # unreadable or cut short: decode everything again
        return {}


def _write_cache(cache_file: Path, stamps: dict[str, list[int]]) -> None:
    """Replaced whole (a temporary file, then rename): a run killed meanwhile leaves the old one.
    A cache that cannot be written only costs the next run its decoding."""
    temporary = cache_file.with_suffix(".tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(stamps))
        os.replace(temporary, cache_file)
    except OSError as error:
        log.warning("could not remember the checked images in %s (%s): the next run decodes "
                    "them again", cache_file, error)
        with contextlib.suppress(OSError):
            temporary.unlink()
