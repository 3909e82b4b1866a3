"""How big each measurement is: --quick for CI's smoke run, --full for the real table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchSize:
    name: str
    rounds: int  # alternating runner / plain rounds; the table reports medians
    steady_steps: int  # measured steps after the runner's StepLogger warm-up steps
    batch_size: int
    resizer_side: int  # resizer input for the side-by-side runs (DenseNet sees half of it)
    recipe_resizer_side: int  # the recipe's real input (300), for the model's consumption rate
    bit_crop: int  # the BiT recipe's crop (224)
    bit_resize: int  # the BiT recipe's resize before the crop (384)
    bit_backbone: str  # "resnet50v2": the R50x1 shape; "tiny": one small conv, for CI
    jpeg_shape: tuple[int, int]  # (height, width) of the JPEGs the pipeline decodes
    pipeline_images: int
    xla: bool  # XLA compiles DenseNet for minutes on a CPU: off in --quick
    startup_repeats: int
    switch_run: tuple[str, ...]  # overrides of the whole quickstart runs that compare switches
    launcher_run: tuple[str, ...]  # overrides of each job of the sweeps that compare launchers
    fixed_cost_run: tuple[str, ...] = ()  # section 8: the quickstart's overrides (none: as it is)
    fixed_cost_bit_run: tuple[str, ...] = ()  # section 8: BiT's seed shape's (none: 15 x 10 steps)


QUICK = BenchSize(
    name="quick", rounds=1, steady_steps=2, batch_size=4, resizer_side=64, recipe_resizer_side=64,
    bit_crop=32, bit_resize=48, bit_backbone="tiny", jpeg_shape=(60, 80), pipeline_images=16,
    xla=False, startup_repeats=1, switch_run=("batch_size=8", "epochs=1", "steps_per_epoch=2"),
    launcher_run=("batch_size=8", "epochs=1", "steps_per_epoch=2"),
    fixed_cost_run=("batch_size=8", "epochs=2", "steps_per_epoch=3"),
    fixed_cost_bit_run=("batch_size=8", "epochs=3", "steps_per_epoch=3"),
)
DEFAULT = BenchSize(
    name="default", rounds=2, steady_steps=4, batch_size=16, resizer_side=64,
    recipe_resizer_side=150, bit_crop=128, bit_resize=160, bit_backbone="resnet50v2",
    jpeg_shape=(300, 400), pipeline_images=100, xla=False, startup_repeats=1, switch_run=("epochs=1",),
    launcher_run=("batch_size=32", "epochs=1", "steps_per_epoch=20"),
)
FULL = BenchSize(
    name="full", rounds=3, steady_steps=8, batch_size=32, resizer_side=128,
    recipe_resizer_side=300, bit_crop=224, bit_resize=384, bit_backbone="resnet50v2",
    jpeg_shape=(300, 400), pipeline_images=200, xla=True, startup_repeats=3, switch_run=("epochs=2",),
    launcher_run=("epochs=1",),
)
