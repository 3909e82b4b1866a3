"""BiT-HyperRule (Kolesnikov et al. 2020, section 3.3; big_transfer's bit_hyperrule.py).

One rule picks the fine-tuning schedule from the dataset alone:
- steps: 500 below 20k training examples, 10k below 500k, 20k above;
- learning rate: linear warm-up, then x0.1 at each boundary (for 500 steps: warm-up 100,
  decays at 200/300/400; for 10k: warm-up 500, decays at 3k/6k/9k, i.e. 30/60/90%);
- MixUp (alpha 0.1) only above 20k examples;
- resolution: images smaller than 96x96 are resized to 160 and cropped to 128, larger ones
  resized to 512 and cropped to 480 (big_transfer's code; the paper says 448 -> 384).
The seed's own schedule (`model.schedule=piecewise`) keeps boundaries 200/300/400 and no warm-up.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

SMALL_DATASET = 20_000
MEDIUM_DATASET = 500_000
SMALL_IMAGE_AREA = 96 * 96


@dataclass(frozen=True)
class HyperRule:
    warmup_steps: int
    decay_boundaries: tuple[int, ...]
    total_steps: int
    mixup_alpha: float
    resize: int
    crop: int


def bit_hyperrule(train_examples: int, image_height: int, image_width: int) -> HyperRule:
    if train_examples < SMALL_DATASET:
        supports = (100, 200, 300, 400, 500)
    elif train_examples < MEDIUM_DATASET:
        supports = (500, 3000, 6000, 9000, 10_000)
    else:
        supports = (500, 6000, 12_000, 18_000, 20_000)
    resize, crop = (160, 128) if image_height * image_width < SMALL_IMAGE_AREA else (512, 480)
    return HyperRule(
        warmup_steps=supports[0],
        decay_boundaries=supports[1:-1],
        total_steps=supports[-1],
        mixup_alpha=0.0 if train_examples < SMALL_DATASET else 0.1,
        resize=resize,
        crop=crop,
    )


def apply_hyperrule(cfg, rule: HyperRule, train_examples: int):
    """A copy of cfg with the rule's resolution, schedule, step count and MixUp filled in."""
    import math

    from omegaconf import OmegaConf

    steps_per_epoch = cfg.steps_per_epoch or math.ceil(train_examples / cfg.batch_size)
    changes = {
        "dataset": {"image_size": rule.resize},
        "model": {
            "crop_size": rule.crop,
            "lr_warmup_steps": rule.warmup_steps,
            "lr_boundaries": list(rule.decay_boundaries),
            "mixup_alpha": rule.mixup_alpha,
        },
        "epochs": math.ceil(rule.total_steps / steps_per_epoch),
        "steps_per_epoch": steps_per_epoch,
    }
    effective = OmegaConf.merge(cfg, changes)
    return effective, changes


def with_hyperrule(cfg, train_data):
    """cfg completed by the rule for this training set (counted, and its first image measured)."""
    from runner.fit.datasets import count_examples, first_image_shape

    train_examples = count_examples(train_data)
    rule = bit_hyperrule(train_examples, *first_image_shape(train_data))
    effective, changes = apply_hyperrule(cfg, rule, train_examples)
    log.info("BiT-HyperRule for %d training images: %s", train_examples, changes)
    return effective
