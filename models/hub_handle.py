"""Turn a model handle (TF-Hub URL, SavedModel folder or .tar.gz of one) into a local folder."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from runner.errors import ConfigError

DEFAULT_CACHE_DIR = Path("~/.cache/runner/savedmodels")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
SAVEDMODEL_LAYOUT = (
    "saved_model.pb, variables/variables.index and variables/variables.data-* "
    "(the content of a TF-Hub 'compressed' download)"
)
ACCEPTED_FORMS = (
    "model.handle accepts (1) a TF-Hub URL such as https://tfhub.dev/google/bit/m-r50x1/1, "
    "resolved through $TFHUB_CACHE_DIR, (2) a local SavedModel folder holding "
    f"{SAVEDMODEL_LAYOUT}, or (3) a local .tar.gz/.tgz archive of such a folder."
)


def resolve_handle(handle: str, cache_dir: str | Path | None = None) -> Path:
    """Returns the local SavedModel folder for `handle`.

    `cache_dir` is where local archives are extracted (default ~/.cache/runner/savedmodels);
    TF-Hub URLs use TF-Hub's own cache ($TFHUB_CACHE_DIR).
    """
    handle = str(handle)
    if handle.startswith(("http://", "https://")):
        return _resolve_url(handle)
    path = Path(handle).expanduser()
    if path.is_dir():
        return _check_savedmodel_folder(path)
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _extract_archive(path, Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
    if not path.exists():
        raise ConfigError(f"model.handle '{handle}' does not exist. {ACCEPTED_FORMS}")
    raise ConfigError(f"model.handle '{handle}' is not a folder or a .tar.gz. {ACCEPTED_FORMS}")


def tfhub_cache_folder(url: str) -> Path:
    """The folder where TF-Hub looks for (and downloads) the model of `url`."""
    from tensorflow_hub import resolver

    cache_root = resolver.tfhub_cache_dir(use_temp=True)
    return Path(cache_root) / hashlib.sha1(url.encode("utf8")).hexdigest()


def _resolve_url(url: str) -> Path:
    import tensorflow_hub as hub

    cached = tfhub_cache_folder(url)
    # Check the cache ourselves first: offline, hub.resolve would only try the network.
    if not (cached / "saved_model.pb").is_file():
        try:
            cached = Path(hub.resolve(url))
        except Exception as error:  # any download failure: offline, 404, proxy, ...
            raise ConfigError(
                f"Cannot download the TF-Hub model '{url}' ({type(error).__name__}: {error}). "
                f"Download {url}?tf-hub-format=compressed on a machine with network, and "
                f"extract it into {cached}/ (that is $TFHUB_CACHE_DIR/<sha1 of the URL>/, "
                "so that saved_model.pb lies directly inside), or pass the extracted folder "
                "or the .tar.gz itself as model.handle."
            ) from error
    return _check_savedmodel_folder(cached)


def _check_savedmodel_folder(folder: Path) -> Path:
    if not (folder / "saved_model.pb").is_file():
        raise ConfigError(
            f"'{folder}' is not a SavedModel folder: it has no saved_model.pb. Expected layout: "
            f"{SAVEDMODEL_LAYOUT}. Point model.handle at the folder that holds saved_model.pb."
        )
    return folder


def _extract_archive(archive: Path, cache_root: Path) -> Path:
    archive = archive.resolve()
    stat = archive.stat()
    # Keyed by path, size and mtime: a replaced archive gets a fresh extraction.
    key = hashlib.sha1(f"{archive}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"\.(tar\.gz|tgz)$", "", archive.name)
    target = cache_root / f"{stem}-{key}"
    if not target.is_dir():
        cache_root.mkdir(parents=True, exist_ok=True)
        # Extract next to the target and rename: a crash never leaves a half-filled cache.
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}-", suffix=".partial", dir=cache_root))
        try:
            _extract_into(archive, staging)
            _find_savedmodel(staging, archive)
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # not lost to a concurrent extraction of the same file
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _find_savedmodel(target, archive)


class UnsafeMember(Exception):
    """An archive member that would land outside the extraction folder, or is not a plain file."""


# tarfile's own refusal, where the Python has the data filter (3.8.17+, 3.9.17+, 3.12+).
UNSAFE_MEMBER_ERRORS = (UnsafeMember, *((tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()))


def _extract_into(archive: Path, folder: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            extract_safely(tar, folder)
    except UNSAFE_MEMBER_ERRORS as error:
        raise ConfigError(
            f"Refused to extract '{archive}': it contains an unsafe member ({error}). "
            "Re-create the archive from the SavedModel folder, or pass the folder as model.handle."
        ) from error
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ConfigError(
            f"Cannot read the archive '{archive}' ({type(error).__name__}: {error}); it is "
            "corrupt or not a .tar.gz. Download it again, or extract it yourself and pass the "
            "folder as model.handle."
        ) from error


def extract_safely(tar: tarfile.TarFile, folder: Path) -> None:
    """Extract an untrusted archive into `folder`. With tarfile's data filter where Python has it:
    it refuses absolute paths, '..' members, links out of `folder` and device files. Older
    Pythons (Python 3.7, the Ascend hosts' default, and 3.8/3.9 before their .17 releases) get a
    stricter check of every member first: regular files and folders inside `folder` only (a
    SavedModel holds nothing else)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(folder, filter="data")
        return
    refuse_unsafe_members(tar, folder)
    tar.extractall(folder)


def refuse_unsafe_members(tar: tarfile.TarFile, folder: Path) -> None:
    """Raise UnsafeMember unless every member is a regular file or folder inside `folder`."""
    root = folder.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if os.path.isabs(member.name) or (target != root and root not in target.parents):
            raise UnsafeMember(f"{member.name!r} would be extracted outside {root}")
        if not (member.isfile() or member.isdir()):
            raise UnsafeMember(f"{member.name!r} is a link or a special file")


def _find_savedmodel(folder: Path, archive: Path) -> Path:
    """The SavedModel inside an extracted archive: at its top or one folder down."""
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    for candidate in candidates:
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise ConfigError(
        f"The archive '{archive}' holds no saved_model.pb (looked at its top level and one "
        f"folder down). A model archive must hold {SAVEDMODEL_LAYOUT}."
    )
