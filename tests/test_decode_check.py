"""Every image decodes before training (data/decode_check.py): a bad one is named, a good folder
is remembered by size and modification time, and a changed file is decoded again."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from data_fixtures import write_image_folder

from runner.errors import ConfigError

pytestmark = pytest.mark.ascend_stack


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_jpeg_and_a_fake_png_are_named_with_their_paths(tmp_path):
    from data.decode_check import check_images_decode

    root = write_image_folder(tmp_path / "pets", per_class=4)
    jpeg = next(p for p in _files(root) if p.suffix == ".jpg")
    _cut_short(jpeg)  # still starts with JPEG's magic bytes
    fake_png = root / "cat" / "fake.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    with pytest.raises(ConfigError) as caught:
        check_images_decode(_files(root), str(root), None)
    message = str(caught.value)
    assert str(jpeg) in message and str(fake_png) in message
    good = [p for p in _files(root) if p not in (jpeg, fake_png)]
    assert not any(str(p) in message for p in good)


def test_a_good_folder_passes_and_is_remembered_per_file(tmp_path):
    from data.decode_check import check_images_decode

    root = write_image_folder(tmp_path / "pets", per_class=3)
    cache = tmp_path / "cache"
    check_images_decode(_files(root), str(root), str(cache))
    (cache_file,) = cache.iterdir()
    remembered = json.loads(cache_file.read_text())
    assert sorted(remembered) == sorted(str(p) for p in _files(root))
    first = _files(root)[0]
    assert remembered[str(first)] == [first.stat().st_size, first.stat().st_mtime_ns]
    assert not list(cache.glob("*.tmp"))


def test_an_unchanged_file_is_not_decoded_again_but_a_changed_one_is(tmp_path, monkeypatch):
    """Proved by what is decoded, not by time: the second run decodes only the changed file,
    and finds it bad."""
    import data.decode_check as decode_check

    root = write_image_folder(tmp_path / "pets", per_class=3)
    cache = str(tmp_path / "cache")
    decode_check.check_images_decode(_files(root), str(root), cache)

    decoded = []
    real_decode_error = decode_check.decode_error
    monkeypatch.setattr(decode_check, "decode_error", lambda p: decoded.append(p) or real_decode_error(p))
    decode_check.check_images_decode(_files(root), str(root), cache)
    assert decoded == []

    changed = _files(root)[1]
    _cut_short(changed)  # a new size
    with pytest.raises(ConfigError) as caught:
        decode_check.check_images_decode(_files(root), str(root), cache)
    assert decoded == [str(changed)]
    assert str(changed) in str(caught.value)

    # Same size, newer modification time: decoded again too (and still bad).
    decoded.clear()
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ConfigError):
        decode_check.check_images_decode(_files(root), str(root), cache)
    assert decoded == [str(changed)]


def test_each_dataset_folder_has_its_own_memory(tmp_path):
    from data.decode_check import check_images_decode

    cache = tmp_path / "cache"
    for name in ("a", "b"):
        root = write_image_folder(tmp_path / name, per_class=2)
        check_images_decode(_files(root), str(root), str(cache))
    assert len(list(cache.iterdir())) == 2


def test_a_corrupt_cache_file_means_decoding_again(tmp_path):
    from data.decode_check import check_images_decode

    root = write_image_folder(tmp_path / "pets", per_class=2)
    cache = tmp_path / "cache"
    check_images_decode(_files(root), str(root), str(cache))
    (cache_file,) = cache.iterdir()
    cache_file.write_text("{ cut short")
    bad = _files(root)[0]
    bad.write_bytes(bad.read_bytes()[:40])  # same modification second is possible: size changes
    with pytest.raises(ConfigError) as caught:
        check_images_decode(_files(root), str(root), str(cache))
    assert str(bad) in str(caught.value)


def test_loading_an_image_folder_checks_its_images(tmp_path):
    """The check sits on the path training takes: load_image_folder_splits."""
    from data.image_folder import load_image_folder_splits

    root = write_image_folder(tmp_path / "pets", per_class=4)
    bad = next(p for p in _files(root) if p.suffix == ".jpg")
    _cut_short(bad)
    with pytest.raises(ConfigError) as caught:
        load_image_folder_splits(str(root), 0.25, seed=0, checked_images_cache=str(tmp_path / "c"))
    assert str(bad) in str(caught.value)
