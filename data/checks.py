"""Checks of on-disk datasets that need no TensorFlow, so bad paths fail in a fraction of a second."""
from __future__ import annotations

import json
from pathlib import Path

from runner.errors import ConfigError

IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


def _prepare_hint(name: str) -> str:
    # tfds.load first: TFDS 4.9's `tfds build` needs Apache Beam, which neither stack installs.
    return (
        f"On a machine with network, prepare it with `python -c \"import tensorflow_datasets as "
        f"tfds; tfds.load('{name}', data_dir='DIR')\"` (or `tfds build {name} --data_dir=DIR`) "
        f"and copy DIR/{name}/ here."
    )


def _versions_present(dataset_dir: Path) -> list[Path]:
    """The prepared version folders, oldest first by number (3.0.10 after 3.0.9, not text order)."""
    versions = [p for p in dataset_dir.glob("*") if (p / "dataset_info.json").is_file()]
    return sorted(versions, key=_version_key)


def find_tfds_version_dir(data_dir: str, name: str, version: str | None) -> Path:
    """The prepared `<data_dir>/<name>/<version>/` folder, also when data_dir already points into it."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"dataset.data_dir={data_dir!r} does not exist. Pass the folder that holds "
            f"{name}/{version or '<version>'}/ (dataset_info.json and {name}-train.tfrecord-* files). "
            + _prepare_hint(name)
        )
    candidates = [root / name, root] if root.name != name else [root]
    for dataset_dir in candidates:
        if (dataset_dir / "dataset_info.json").is_file():
            version_dir = dataset_dir  # data_dir names the version folder itself
        elif version is not None:
            version_dir = dataset_dir / version
        else:
            version_dir = (_versions_present(dataset_dir) or [dataset_dir / "<version>"])[-1]
        if (version_dir / "dataset_info.json").is_file():
            if not list(version_dir.glob(f"{name}-*.tfrecord-*")):
                raise ConfigError(
                    f"{version_dir} has dataset_info.json but no {name}-train.tfrecord-* files: the "
                    f"copy is incomplete. Copy every file of the prepared folder. " + _prepare_hint(name)
                )
            _check_json_files(version_dir, name)
            return version_dir
    present = [v.name for d in candidates for v in _versions_present(d)]
    if version is not None and present:
        raise ConfigError(
            f"{root / name} has no version {version} of {name!r}, but {', '.join(present)}: a newer "
            f"TFDS prepares a newer version (TFDS 4.9.10 builds cats_vs_dogs 4.0.1). Pass "
            f"dataset.version={present[-1]}, or dataset.version=null for the newest present."
        )
    expected = root / name / (version or "<version>")
    raise ConfigError(
        f"No prepared TFDS dataset {name!r} under dataset.data_dir={data_dir!r}: expected "
        f"{expected}/ holding dataset_info.json, features.json and {name}-train.tfrecord-* files. "
        + _prepare_hint(name)
    )


def _check_json_files(version_dir: Path, name: str) -> None:
    """TFDS reads its description files with protobuf's parser, whose error names no file."""
    for description in ("dataset_info.json", "features.json"):
        path = version_dir / description
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{path} is not valid JSON ({error}): the prepared copy of {name!r} is damaged. "
                f"Copy that file again from the machine that prepared the dataset. " + _prepare_hint(name)
            ) from None


def _version_key(version_dir: Path) -> tuple[int, ...]:
    """A version folder's name as numbers: 3.0.10 is newer than 3.0.9, which text order denies."""
    return tuple(int(part) if part.isdigit() else -1 for part in version_dir.name.split("."))


def list_image_folder(path: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and (file, label) pairs of a `<path>/<class>/*.jpg|png|...` tree, checked."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"dataset.path={path!r} does not exist. Create it with one sub-folder per class, "
            f"each holding that class's images: {path}/cats/1.jpg, {path}/dogs/2.png, ..."
        )
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and any(_is_image_name(f) for f in d.iterdir())
    )
    if len(class_dirs) < 2:
        found = ", ".join(d.name for d in class_dirs) or "none"
        raise ConfigError(
            f"dataset.path={path!r} has {len(class_dirs)} class folder(s) with images "
            f"(found: {found}); a classifier needs at least 2. Put each class's images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) in its own sub-folder: {path}/<class_name>/*.jpg."
        )
    files = [
        (f, label)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if _is_image_name(f)
    ]
    bad = [str(f) for f, _ in files if not has_image_signature(f)]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ConfigError(
            f"{len(bad)} file(s) in dataset.path={path!r} are not readable JPEG/PNG/GIF/BMP "
            f"images: {shown}. Remove or re-encode them."
        )
    return [d.name for d in class_dirs], files


def _is_image_name(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def has_image_signature(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return any(head.startswith(sig) for sig in IMAGE_SIGNATURES)
