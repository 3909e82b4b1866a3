"""Model config -> Keras model, compiled for the run: the one place a `model.*` architecture key
takes effect."""

from typing import Any

from runner.errors import ConfigError

DENSENET_FAMILY = ("resizer_densenet", "densenet")
MODEL_NAMES = (*DENSENET_FAMILY, "bit")


def resizer_target_size(model_cfg: Any, image_size: int) -> int:
    """model.target_size, or half the input side when null (the seed's 300 -> 150)."""
    return model_cfg.target_size if model_cfg.target_size is not None else image_size // 2


def build_network(model_cfg: Any, num_classes: int, image_size: int):
    """The model named by model.name, built from its family's keys."""
    if model_cfg.name in DENSENET_FAMILY:
        from models.resizer import build_resizer_densenet

        return build_resizer_densenet(
            num_classes,
            image_size,
            target_size=resizer_target_size(model_cfg, image_size),
            learnable_resizer_on=model_cfg.learnable_resizer,
            filters=model_cfg.filters,
            num_res_blocks=model_cfg.num_res_blocks,
            interpolation=model_cfg.interpolation,
            bn_momentum=model_cfg.bn_momentum,
        )
    if model_cfg.name == "bit":
        from models.bit import build_bit

        return build_bit(
            num_classes,
            handle=model_cfg.handle,
            trainable_backbone=model_cfg.trainable_backbone,
            backbone=model_cfg.backbone,
            weights=model_cfg.weights,
            cache_dir=model_cfg.get("cache_dir"),  # absent in runs made before it existed
            block_units=tuple(model_cfg.block_units),
            width_factor=model_cfg.width_factor,
        )
    raise ConfigError(f"model.name={model_cfg.name!r} is not one of {', '.join(MODEL_NAMES)}.")


def compiled_model(cfg: Any, num_classes: int):
    """The network, compiled with the run's optimiser, loss and speed switches (under the
    current strategy scope and dtype policy). The model stage: reads the model, dataset.image_size,
    batch_size, the device and precision (the NPU's optimizer) and the speed switches."""
    from runner.device.npu import npu_optimizer
    from runner.fit.optim import build_accuracy, build_loss, build_optimizer
    from runner.keras2 import compile_options, create_optimizer_state

    model = build_network(cfg.model, num_classes, cfg.dataset.image_size)
    model.compile(
        optimizer=npu_optimizer(cfg.device, cfg.precision.mode, build_optimizer(cfg.model, cfg.batch_size)),
        loss=build_loss(cfg.model),
        metrics=[build_accuracy(cfg.model)],
        steps_per_execution=cfg.steps_per_execution,
        **compile_options(cfg.jit_compile),
    )
    create_optimizer_state(model)
    return model
