"""Bad input fails fast with one paragraph naming the bad value and the fix."""

import pytest

from runner.errors import ConfigError
from runner.preflight import check_config
from tests.conftest import compose_config

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset


def error_for(overrides, tmp_path) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(compose_config(overrides, tmp_path / "run"))
    message = str(info.value)
    # A short paragraph of whole sentences (ConfigError already joins lines): the problem and the
    # fix, not a quoted library dump.
    assert len(message) <= 600 and message.endswith("."), message
    return message


@pytest.mark.parametrize("key", ["batch_size", "epochs", "log_steps", "steps_per_execution"])
@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_counts(key, value, tmp_path):
    message = error_for([f"{key}={value}"], tmp_path)
    assert f"{key}={value}" in message


def test_a_dump_switched_on_without_its_option_names_debug_dump(tmp_path):
    """conf/debug/dump.yaml holds the dump's folder: debug.dump.enabled=true alone has none."""
    message = error_for(["debug.dump.enabled=true"], tmp_path)
    assert "debug=dump" in message and "debug.dump.path=DIR" in message
    check_config(compose_config(["debug=dump"], tmp_path / "run"))


def test_target_size_larger_than_input(tmp_path):
    message = error_for(["model.target_size=128"], tmp_path)  # digits are read at 64
    assert "model.target_size=128" in message and "dataset.image_size=64" in message


def test_crop_larger_than_image(tmp_path):
    message = error_for(["model.crop_size=65"], tmp_path)
    assert "model.crop_size=65" in message


@pytest.mark.parametrize("model", ["resizer_densenet", "densenet"])
def test_a_resizer_crop_smaller_than_its_input_is_refused(tmp_path, model):
    """The resizer's network is built for dataset.image_size, which validation reads uncropped: a
    smaller training crop would fail inside TensorFlow with a shape error."""
    message = error_for([f"model={model}", "model.crop_size=48"], tmp_path)  # digits are read at 64
    assert "model.crop_size=48" in message and "dataset.image_size=64" in message
    check_config(compose_config([f"model={model}", "model.crop_size=64"], tmp_path))  # the same size


def test_data_dir_not_set(tmp_path):
    message = error_for(["dataset=cats_vs_dogs"], tmp_path)
    assert "dataset.data_dir" in message and "dataset.data_dir=" in message


def test_data_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere"
    message = error_for(["dataset=cats_vs_dogs", f"dataset.data_dir={missing}"], tmp_path)
    assert str(missing) in message and "cats_vs_dogs/4.0.0" in message
    assert "tfds.load('cats_vs_dogs', data_dir='DIR')" in message and "tfds build" in message


def test_a_version_folder_that_is_not_there_names_the_ones_that_are(tmp_path):
    """README: TFDS 4.9.10 builds cats_vs_dogs 4.0.1; the seed's config asks for 4.0.0."""
    for version in ("4.0.1", "4.0.10", "4.0.9"):
        (tmp_path / "data" / "cats_vs_dogs" / version).mkdir(parents=True)
        (tmp_path / "data" / "cats_vs_dogs" / version / "dataset_info.json").write_text("{}")
    message = error_for(["dataset=cats_vs_dogs", f"dataset.data_dir={tmp_path / 'data'}"], tmp_path)
    assert "no version 4.0.0" in message and "4.0.1, 4.0.9, 4.0.10" in message
    assert "dataset.version=4.0.10" in message and "dataset.version=null" in message


def test_data_dir_without_prepared_files(tmp_path):
    (tmp_path / "data" / "tf_flowers" / "3.0.1").mkdir(parents=True)
    message = error_for(["dataset=tf_flowers", f"dataset.data_dir={tmp_path / 'data'}"], tmp_path)
    assert "tf_flowers/3.0.1" in message and "dataset_info.json" in message


def test_prepared_folder_missing_its_tfrecords(tmp_path):
    version_dir = tmp_path / "data" / "tf_flowers" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    message = error_for(["dataset=tf_flowers", f"dataset.data_dir={tmp_path / 'data'}"], tmp_path)
    assert str(version_dir) in message and "tfrecord" in message


def test_image_folder_with_one_class(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    message = error_for(["dataset=image_folder", f"dataset.path={tmp_path / 'imgs'}"], tmp_path)
    assert "1 class folder" in message and "cat" in message and "at least 2" in message


def test_image_folder_with_an_unreadable_image(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        (tmp_path / "imgs" / name / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)
    (tmp_path / "imgs" / "dog" / "notes.jpg").write_text("not an image")
    message = error_for(["dataset=image_folder", f"dataset.path={tmp_path / 'imgs'}"], tmp_path)
    assert "notes.jpg" in message and "Remove or re-encode" in message


def test_image_folder_path_missing(tmp_path):
    message = error_for(["dataset=image_folder"], tmp_path)
    assert "dataset.path" in message


def test_bit_handle_folder_without_a_savedmodel(tmp_path):
    (tmp_path / "ttst").mkdir()
    message = error_for(["model=bit", f"model.handle={tmp_path / 'ttst'}",
                         "dataset=digits", "model.crop_size=32"], tmp_path)
    assert str(tmp_path / "ttst") in message and "saved_model.pb" in message


def test_bit_handle_that_is_neither_url_folder_nor_archive(tmp_path):
    (tmp_path / "model.zip").write_bytes(b"PK")
    message = error_for(["model=bit", f"model.handle={tmp_path / 'model.zip'}",
                         "dataset=digits", "model.crop_size=32"], tmp_path)
    assert "model.zip" in message and "TF-Hub URL" in message and ".tar.gz" in message


def test_bit_native_weights_missing(tmp_path):
    message = error_for(["model=bit", "model.backbone=native", "model.weights=/no/BiT-M-R50x1.npz",
                         "dataset=digits", "model.crop_size=32"], tmp_path)
    assert "/no/BiT-M-R50x1.npz" in message and "model.weights=null" in message


def test_corrupt_bit_archive(tmp_path):
    (tmp_path / "bit.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    message = error_for(["model=bit", f"model.handle={tmp_path / 'bit.tar.gz'}",
                         f"model.cache_dir={tmp_path / 'cache'}", "dataset=digits", "model.crop_size=32"],
                        tmp_path)
    assert "bit.tar.gz" in message


def test_version_null_takes_the_newest_version_folder_present(tmp_path):
    """README: `dataset.version=null` takes the newest version folder present (3.0.10 after 3.0.9,
    although "3.0.10" sorts before "3.0.9" as text)."""
    from data.checks import find_tfds_version_dir

    for version in ("3.0.9", "3.0.10", "2.0.0"):
        version_dir = tmp_path / "tf_flowers" / version
        version_dir.mkdir(parents=True)
        (version_dir / "dataset_info.json").write_text("{}")
        (version_dir / "tf_flowers-train.tfrecord-00000-of-00001").write_bytes(b"")
    assert find_tfds_version_dir(str(tmp_path), "tf_flowers", None) == tmp_path / "tf_flowers" / "3.0.10"
    assert find_tfds_version_dir(str(tmp_path), "tf_flowers", "3.0.9") == tmp_path / "tf_flowers" / "3.0.9"


def test_image_folder_reads_the_extensions_the_readme_names(tmp_path):
    """README: `DIR/<class_name>/*.{jpg,jpeg,png,gif,bmp}`, one sub-folder per class."""
    from data.checks import list_image_folder

    signatures = {"jpg": b"\xff\xd8\xff\xe0", "jpeg": b"\xff\xd8\xff\xe0", "png": b"\x89PNG\r\n\x1a\n",
                  "gif": b"GIF89a", "bmp": b"BM"}
    for name, signature in signatures.items():
        for folder in ("a", "b"):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"image.{name}").write_bytes(signature + b"0" * 16)
    (tmp_path / "a" / "notes.txt").write_text("not listed")
    classes, files = list_image_folder(str(tmp_path))
    assert classes == ["a", "b"]
    assert sorted(f.suffix for f, label in files if label == 0) == sorted(f".{n}" for n in signatures)


@pytest.mark.parametrize("tool", ["dump", "overflow", "profiling", "auto_tune"])
def test_a_debug_tool_pointed_at_a_file_is_refused_before_the_run(tool, tmp_path):
    """A file where the tool writes its folder failed deep in TensorFlow, naming neither."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    cfg = compose_config([f"debug={tool}", f"debug.{tool}.path={taken}"], tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert f"debug.{tool}.path={taken}" in str(caught.value)
    assert taken.read_text() == "mine"
    check_config(compose_config([f"debug={tool}", f"debug.{tool}.path={tmp_path / 'new'}"], tmp_path))


@pytest.mark.parametrize("damaged", ["dataset_info.json", "features.json"])
def test_a_damaged_tfds_description_file_is_named(damaged, tmp_path):
    from data.checks import find_tfds_version_dir

    version_dir = tmp_path / "tf_flowers" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text('{"name": "tf_flowers"}')
    (version_dir / "features.json").write_text('{"type": "FeaturesDict"}')
    (version_dir / "tf_flowers-train.tfrecord-00000-of-00001").write_bytes(b"")
    assert find_tfds_version_dir(str(tmp_path), "tf_flowers", "3.0.1") == version_dir
    (version_dir / damaged).write_text('{"name": "tf_flo')  # cut short
    with pytest.raises(ConfigError) as caught:
        find_tfds_version_dir(str(tmp_path), "tf_flowers", "3.0.1")
    assert str(version_dir / damaged) in str(caught.value)


def test_a_fusion_switch_file_off_the_npu_is_a_warning_naming_it(tmp_path, caplog):
    cfg = compose_config(["debug=fusion_off", "debug.fusion_off.file=/nowhere/switch.cfg"], tmp_path)
    with caplog.at_level("WARNING", logger="runner.preflight"):
        check_config(cfg)
    assert [r for r in caplog.records if "/nowhere/switch.cfg" in r.getMessage()]
    caplog.clear()
    with caplog.at_level("WARNING", logger="runner.preflight"):
        check_config(compose_config(["debug=fusion_off"], tmp_path))  # the shipped file: nothing to say
    assert not caplog.records
