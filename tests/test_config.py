"""Every option of every config group composes; schemas and struct mode reject mistakes early."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import CONF_DIR, compose_config

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

GROUPS = ["dataset", "model", "device", "precision", "debug", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], tmp_path)
    assert cfg.output_dir == str(tmp_path)
    if group == "precision":
        assert cfg.precision.mode == option
    if group == "device":
        assert cfg.device.type == option


def test_default_is_the_embedded_quickstart(tmp_path):
    cfg = compose_config([], tmp_path)
    assert (cfg.model.name, cfg.dataset.name, cfg.device.type) == ("resizer_densenet", "digits", "cpu")
    assert cfg.dataset.image_size == 64 and cfg.model.target_size is None  # -> 32


def test_densenet_is_the_resizer_recipe_without_the_resizer(tmp_path):
    base = compose_config(["model=resizer_densenet"], tmp_path).model
    densenet = compose_config(["model=densenet"], tmp_path).model
    assert densenet.learnable_resizer is False and base.learnable_resizer is True
    differing = {k for k in base if base[k] != densenet[k]}
    assert differing == {"name", "learnable_resizer"}


def test_experiment_pins_the_resizer_seed(tmp_path):
    cfg = compose_config(["experiment=resizer_cats_vs_dogs", "dataset.data_dir=/d"], tmp_path)
    assert cfg.dataset.name == "cats_vs_dogs" and cfg.dataset.version == "4.0.0"
    assert (cfg.dataset.train_split, cfg.dataset.val_split) == ("train[:40%]", "train[40%:50%]")
    assert (cfg.dataset.image_size, cfg.model.target_size) == (300, 150)
    assert (cfg.model.optimizer, cfg.model.learning_rate, cfg.model.label_smoothing) == (
        "sgd", 0.01, 0.1,
    )
    assert (cfg.batch_size, cfg.epochs) == (64, 5)


def test_command_line_beats_the_model_recipe(tmp_path):
    """model=bit names tf_flowers and fixes its epochs; the command line's choices win (README)."""
    recipe = compose_config(["model=bit"], tmp_path)
    assert recipe.dataset.name == "tf_flowers" and recipe.epochs != 2
    cfg = compose_config(["model=bit", "dataset=digits", "epochs=2"], tmp_path)
    assert cfg.epochs == 2 and cfg.dataset.name == "digits"


@pytest.mark.parametrize("overrides", [["device.type=tpu"], ["precision.mode=tpu"],
                                       ["debug=dump", "debug.dump.mode=tpu"]])
def test_schema_rejects_a_bad_enumeration_value(tmp_path, overrides):
    """README: wrong enumeration values (device.type, precision.mode, dump modes) fail composing."""
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(overrides, tmp_path)
    assert "tpu" in str(info.value.__cause__) or "tpu" in str(info.value)


def test_schema_rejects_a_wrong_type(tmp_path):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(["batch_size=many"], tmp_path)


@pytest.mark.parametrize("overrides,key", [
    (["model.learning_rate=abc"], "model.learning_rate"),
    (["model.momentum=x"], "model.momentum"),
    (["model.filters=wide"], "model.filters"),
    (["model.schedule=cosine"], "model.schedule"),
    (["model=bit", "model.block_units=[3,four]"], "model.block_units"),
    (["model=bit", "model.trainable_backbone=maybe"], "model.trainable_backbone"),
    (["dataset.image_size=abc"], "dataset.image_size"),
    (["dataset=image_folder", "dataset.path=/x", "dataset.val_fraction=most"], "dataset.val_fraction"),
    (["dataset=tf_flowers", "dataset.data_dir=/x", "dataset.image_size=big"], "dataset.image_size"),
])
def test_model_and_dataset_values_of_the_wrong_type_fail_composing(tmp_path, overrides, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(overrides, tmp_path)
    assert key in str(info.value)


@pytest.mark.parametrize("group", ["model", "dataset"])
def test_every_model_and_dataset_option_is_typed(tmp_path, group):
    """A new model or dataset file without a schema in its defaults list fails here."""
    from omegaconf import OmegaConf

    from runner.config.schema import GROUP_SCHEMAS

    for option in sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")):
        cfg = compose_config([f"{group}={option}"], tmp_path)
        assert OmegaConf.get_type(cfg[group]) in GROUP_SCHEMAS.values(), option


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(["model.fliters=8"], tmp_path)


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(Exception) as info:
        compose_config(["model=resnet"], tmp_path)
    message = str(info.value)
    assert "resnet" in message and "resizer_densenet" in message and "densenet" in message


def recipe_keys(model: str) -> tuple[set[str], list]:
    """The top-level keys a model file sets besides `model`, and its defaults list."""
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(Path(CONF_DIR) / "model" / f"{model}.yaml")
    return set(recipe) - {"model", "defaults"}, list(recipe.get("defaults", []))


def test_the_rule_for_models_and_datasets(tmp_path):
    """README, "The rule for models and datasets": bit sets batch_size, epochs and steps_per_epoch
    and picks tf_flowers; resizer_densenet sets batch_size and epochs and names no dataset (densenet
    extends it); a dataset file sets dataset.* only."""
    assert recipe_keys("bit") == ({"batch_size", "epochs", "steps_per_epoch"},
                                  ["/bit_model_schema@model", {"override /dataset": "tf_flowers"}])
    assert recipe_keys("resizer_densenet") == (
        {"batch_size", "epochs"}, ["/resizer_densenet_model_schema@model", "_self_"])
    assert recipe_keys("densenet") == (set(), ["resizer_densenet", "_self_"])
    assert compose_config(["model=resizer_densenet"], tmp_path).steps_per_epoch is None
    default = compose_config([], tmp_path)
    for dataset in options("dataset"):
        cfg = compose_config([f"dataset={dataset}"], tmp_path)
        assert {key for key in cfg if cfg[key] != default[key]} <= {"dataset"}, dataset


def test_a_null_target_size_is_half_the_input():
    """README: the resizer's output side is model.target_size (null: half the input, 300 -> 150)."""
    from runner.fit.network import resizer_target_size

    model = compose_config(["model.target_size=null"]).model
    assert (resizer_target_size(model, 300), resizer_target_size(model, 64)) == (150, 32)
    assert resizer_target_size(compose_config(["model.target_size=48"]).model, 64) == 48
