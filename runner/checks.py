"""Config checks that need no TensorFlow: a bad value fails in a fraction of a second."""

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from runner.errors import ConfigError
from runner.network import DENSENET_FAMILY, MODEL_NAMES, resizer_target_size

MISSING_HINTS = {
    "dataset.data_dir": "the folder holding <name>/<version>/ of a TFDS-prepared dataset, "
    "e.g. dataset.data_dir=/home/data for /home/data/tf_flowers/3.0.1/",
    "dataset.path": "a folder with one sub-folder of images per class, "
    "e.g. dataset.path=/data/pets for /data/pets/cat/*.jpg and /data/pets/dog/*.jpg",
}


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad value and its fix."""
    _check_missing(cfg)
    for key in ("batch_size", "epochs", "log_steps", "steps_per_execution"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key}={cfg[key]} must be a positive integer, e.g. {key}=32.")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch <= 0:
        raise ConfigError(
            f"steps_per_epoch={cfg.steps_per_epoch} must be positive, or null for one pass "
            "over the training split."
        )
    _check_model(cfg.model, cfg.dataset.image_size)
    _check_dataset_files(cfg.dataset)


def _check_missing(cfg: DictConfig) -> None:
    for key, hint in MISSING_HINTS.items():
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(
                f"{key} is not set for dataset={cfg.dataset.name}: pass {hint}."
            ) from None


def _check_model(model_cfg: DictConfig, image_size: int) -> None:
    if model_cfg.name not in MODEL_NAMES:
        raise ConfigError(f"model.name={model_cfg.name!r} is not one of {', '.join(MODEL_NAMES)}.")
    if image_size <= 0:
        raise ConfigError(f"dataset.image_size={image_size} must be positive.")
    if model_cfg.name in DENSENET_FAMILY:
        target = resizer_target_size(model_cfg, image_size)
        if not 32 <= target <= image_size:
            raise ConfigError(
                f"model.target_size={target} must lie between 32 (DenseNet-121's smallest input) "
                f"and the input size dataset.image_size={image_size}: the resizer shrinks images. "
                "Set model.target_size in that range, or change dataset.image_size."
            )
    crop = model_cfg.get("crop_size")
    if crop is not None and not 0 < crop <= image_size:
        raise ConfigError(
            f"model.crop_size={crop} must be positive and at most dataset.image_size={image_size}."
        )


def _check_dataset_files(dataset_cfg: DictConfig) -> None:
    from data.checks import find_tfds_version_dir, list_image_folder

    if dataset_cfg.source == "tfds":
        find_tfds_version_dir(dataset_cfg.data_dir, dataset_cfg.name, dataset_cfg.version)
    elif dataset_cfg.source == "image_folder":
        list_image_folder(dataset_cfg.path)
