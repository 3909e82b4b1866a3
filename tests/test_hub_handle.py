import hashlib
import re
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from models.hub_handle import UnsafeMember, refuse_unsafe_members, resolve_handle
from runner.errors import ConfigError
from tests.bit_fixtures import write_bit_savedmodel, write_tar_gz

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

BIT_URL = "https://tfhub.dev/google/bit/m-r50x1/1"


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory) -> Path:
    return write_bit_savedmodel(tmp_path_factory.mktemp("hub") / "bit_m-r50x1_1")


def test_folder_is_returned_as_is(savedmodel):
    assert resolve_handle(str(savedmodel)) == savedmodel


def test_folder_without_saved_model_pb_names_folder_and_layout(tmp_path):
    (tmp_path / "variables").mkdir()
    with pytest.raises(ConfigError, match="saved_model.pb") as raised:
        resolve_handle(str(tmp_path))
    assert str(tmp_path) in str(raised.value)
    assert "variables/variables.index" in str(raised.value)


def test_missing_path_names_it_and_lists_accepted_forms(tmp_path):
    missing = tmp_path / "nowhere" / "bit_m-r50x1_1"
    with pytest.raises(ConfigError, match="does not exist") as raised:
        resolve_handle(str(missing))
    assert str(missing) in str(raised.value)
    assert "TF-Hub URL" in str(raised.value) and ".tar.gz" in str(raised.value)


@pytest.mark.parametrize("handle", ["model.zip", "gs://bucket/model", "tfhub.dev/google/bit"])
def test_other_handles_list_accepted_forms(tmp_path, handle):
    if handle.endswith(".zip"):
        handle = str(tmp_path / handle)
        Path(handle).write_bytes(b"PK")
    with pytest.raises(ConfigError, match="accepts") as raised:
        resolve_handle(handle)
    assert handle in str(raised.value)


@pytest.mark.parametrize("top_folder", [None, "bit_m-r50x1_1"])
def test_tar_gz_is_extracted_once_and_reused(savedmodel, tmp_path, top_folder):
    archive = write_tar_gz(savedmodel, tmp_path / "bit_m-r50x1_1.tar.gz", top_folder)
    cache = tmp_path / "cache"

    folder = resolve_handle(str(archive), cache_dir=cache)
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "variables" / "variables.index").is_file()
    assert cache in folder.parents
    marker = folder / "marker"
    marker.write_text("extracted by the first call")
    pb_mtime = (folder / "saved_model.pb").stat().st_mtime_ns

    assert resolve_handle(str(archive), cache_dir=cache) == folder
    assert marker.exists()  # the same folder, not a fresh extraction
    assert (folder / "saved_model.pb").stat().st_mtime_ns == pb_mtime
    assert len(list(cache.iterdir())) == 1  # no staging folder left behind


def test_replaced_tar_gz_is_extracted_again(savedmodel, tmp_path):
    archive = write_tar_gz(savedmodel, tmp_path / "model.tgz")
    first = resolve_handle(str(archive), cache_dir=tmp_path / "cache")
    write_tar_gz(savedmodel, archive, top_folder="renewed")
    second = resolve_handle(str(archive), cache_dir=tmp_path / "cache")
    assert second != first and second.name == "renewed"


def test_corrupt_archive_names_it(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip data" * 10)
    with pytest.raises(ConfigError, match="corrupt") as raised:
        resolve_handle(str(archive), cache_dir=tmp_path / "cache")
    assert str(archive) in str(raised.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_archive_escaping_its_folder_is_refused(tmp_path):
    payload = tmp_path / "payload.txt"
    payload.write_text("evil")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../evil.txt")
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ConfigError, match="unsafe member") as raised:
        resolve_handle(str(archive), cache_dir=cache)
    assert str(archive) in str(raised.value)
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert list(cache.iterdir()) == []


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    return member


@pytest.mark.parametrize("member", [
    _member("/etc/evil.txt"),
    _member("model/../../evil.txt"),
    _member("model/link", tarfile.SYMTYPE, "../../outside"),
    _member("model/inner_link", tarfile.SYMTYPE, "saved_model.pb"),
    _member("model/hard", tarfile.LNKTYPE, "model/saved_model.pb"),
    _member("model/fifo", tarfile.FIFOTYPE),
    _member("model/dev", tarfile.CHRTYPE),
], ids=lambda member: member.name)
def test_without_the_data_filter_only_plain_files_and_folders_inside_are_extracted(tmp_path, member):
    """The check that stands in for tarfile's data filter on Pythons that lack it (3.7 everywhere):
    stricter than the filter, it refuses links of any kind too."""
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(_member("model", tarfile.DIRTYPE))
        tar.addfile(_member("model/saved_model.pb"))
        tar.addfile(member)
    with tarfile.open(archive) as tar, pytest.raises(UnsafeMember, match=re.escape(repr(member.name))):
        refuse_unsafe_members(tar, tmp_path / "out")


def test_without_the_data_filter_a_savedmodel_archive_passes(tmp_path, savedmodel):
    archive = write_tar_gz(savedmodel, tmp_path / "m.tar.gz", "m")
    with tarfile.open(archive) as tar:
        refuse_unsafe_members(tar, tmp_path / "out")  # raises on any member it refuses


def test_archive_without_saved_model_is_refused(tmp_path):
    content = tmp_path / "content"
    (content / "a" / "b").mkdir(parents=True)
    (content / "a" / "b" / "saved_model.pb").write_bytes(b"too deep")
    archive = write_tar_gz(content, tmp_path / "empty.tar.gz")
    with pytest.raises(ConfigError, match="no saved_model.pb") as raised:
        resolve_handle(str(archive), cache_dir=tmp_path / "cache")
    assert str(archive) in str(raised.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_url_resolves_offline_from_tfhub_cache_dir(savedmodel, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    cached = tmp_path / hashlib.sha1(BIT_URL.encode()).hexdigest()
    write_bit_savedmodel(cached)
    assert resolve_handle(BIT_URL) == cached


def test_url_not_cached_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    # Fail at once, as offline, and never touch a real network from a test.
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(ConfigError) as raised:
        resolve_handle(BIT_URL)
    message = str(raised.value)
    assert f"{BIT_URL}?tf-hub-format=compressed" in message
    assert str(tmp_path / hashlib.sha1(BIT_URL.encode()).hexdigest()) in message


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")
