"""Structured-config schemas: typos and bad enumeration values fail while Hydra composes.

Every group is typed: top-level keys, device, precision, debug here in RunConfig; model and dataset
files by family (BitModel, ResizerDensenetModel, TfdsDataset, ...), each file naming its schema
first in its defaults list. The YAML files hold the values (and say what they mean); the model and
dataset schemas hold only the types. OmegaConf evaluates these annotations when the classes are
made, and the Ascend stack's Pythons cannot evaluate `int | None` (3.7-3.9) nor `list[int]` (3.7,
3.8): hence `Optional[int]` and `List[int]`.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.config.precision_modes import PRECISION_MODES


class Choice(str, Enum):
    """An enumeration whose members print as their values ("npu", not "DeviceType.npu")."""

    def __str__(self) -> str:
        return self.value


class DeviceType(Choice):
    cpu = "cpu"
    gpu = "gpu"
    npu = "npu"


# The NPU's precision_mode values; what each means on each device: runner/config/precision_modes.py.
PrecisionMode = Choice("PrecisionMode", {name: name for name in PRECISION_MODES})


class DumpMode(Choice):
    input = "input"
    output = "output"
    all = "all"


class OverflowMode(Choice):
    aicore_overflow = "aicore_overflow"
    atomic_overflow = "atomic_overflow"
    all = "all"


class CaseKind(Choice):
    """Ascend's CaseName suffix: a full (accuracy) run or a short performance run."""

    acc = "acc"
    perf = "perf"
    dynamic_perf = "dynamic_perf"  # BiT's train_performance_1p_dynamic_eval.sh


class OptimizedMetric(Choice):
    """What a run returns to a sweeper (`hparams_search=optuna` optimises it)."""

    val_accuracy = "val_accuracy"
    val_loss = "val_loss"


def direction(metric: str) -> str:
    """Optuna's direction for a metric: losses are minimised, accuracies maximised."""
    return "minimize" if metric.endswith("loss") else "maximize"


class ModelZoo(Choice):
    """Whose ModelZoo train.py's console lines and figures a run reproduces (runner/ascend/modelzoo.py)."""

    bit = "bit"
    learnable_resizer = "learnable_resizer"


@dataclass
class DeviceConfig:
    type: DeviceType = DeviceType.cpu
    id: Optional[int] = None  # NPU: null lets npu_device use $ASCEND_DEVICE_ID (0)
    num_devices: int = 1
    memory_growth: bool = True
    multi_worker: bool = False
    # NPU: CANN's TF adapter options beyond the runner's own, nested as the adapter nests them
    # (runner/config/npu_option_tree.py checks them; runner/device/npu.py sets them).
    npu_options: Dict[str, Any] = field(default_factory=dict)
    # NPU, under -m: the jobs share compile caches in <sweep dir>/npu_compile_cache (runner/device/npu.py).
    sweep_compile_cache: bool = True


@dataclass
class PrecisionConfig:
    mode: PrecisionMode = PrecisionMode.force_fp32


@dataclass
class DumpConfig:
    enabled: bool = False
    path: str = MISSING  # conf/debug/dump.yaml: <run dir>/dump
    step: str = "10"  # "10", or "0|5|10-20"
    mode: DumpMode = DumpMode.output


@dataclass
class OverflowConfig:
    enabled: bool = False
    path: str = "${output_dir}/overflow"
    mode: OverflowMode = OverflowMode.all


@dataclass
class ProfilingConfig:
    enabled: bool = False
    path: str = "${output_dir}/profiling"
    start_step: int = 5
    num_steps: int = 5
    aic_metrics: str = "PipeUtilization"
    fp_point: str = ""
    bp_point: str = ""


@dataclass
class FusionOffConfig:
    enabled: bool = False
    file: Optional[str] = None  # null: conf/debug/fusion_switch.cfg, shipped with the project


@dataclass
class MixlistConfig:
    enabled: bool = False
    file: str = "ops_info.json"


@dataclass
class AutoTuneConfig:
    enabled: bool = False
    aoe_mode: str = "2"  # npu_device's aoe_config.aoe_mode: runner/preflight.py AOE_MODES
    path: str = "${output_dir}/aoe"


@dataclass
class DebugConfig:
    dump: DumpConfig = field(default_factory=DumpConfig)
    overflow: OverflowConfig = field(default_factory=OverflowConfig)
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    fusion_off: FusionOffConfig = field(default_factory=FusionOffConfig)
    mixlist: MixlistConfig = field(default_factory=MixlistConfig)
    auto_tune: AutoTuneConfig = field(default_factory=AutoTuneConfig)


@dataclass
class ThreadsConfig:
    """TensorFlow's op thread pools; null leaves TensorFlow's choice (one thread per core)."""

    intra_op: Optional[int] = None
    inter_op: Optional[int] = None


@dataclass
class PipelineConfig:
    """tf.data choices runner/fit/datasets.py does not take from the dataset file."""

    cache: Optional[bool] = None  # null: cache decoded images when they fit in cache_budget_mb
    cache_budget_mb: int = 2048


@dataclass
class TensorBoardLogger:
    hparams: bool = True  # the run's hyperparameters and final metrics for TensorBoard's HParams tab


@dataclass
class MlflowLogger:
    # Relative paths are from the working directory, as outputs/ is (runner/record/tracking.py).
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    # One experiment for everything: a sweep's parent and child runs must share it.
    experiment_name: str = "runner"
    log_weights: bool = False  # checkpoints/*_weights.h5 as artifacts too


@dataclass
class LoggerConfig:
    """Filled by the `logger` group: `logger=[tensorboard,mlflow]` sets both."""

    tensorboard: Optional[TensorBoardLogger] = None
    mlflow: Optional[MlflowLogger] = None


class Optimizer(Choice):
    sgd = "sgd"
    adam = "adam"


class Schedule(Choice):
    """runner/fit/optim.py's learning-rate schedules."""

    constant = "constant"
    piecewise = "piecewise"
    hyperrule = "hyperrule"


class Backbone(Choice):
    hub = "hub"  # the SavedModel model.handle names
    native = "native"  # models/resnetv2.py


@dataclass
class TrainingRecipe:
    """What every model file sets: the optimiser, its schedule, augmentation and loss."""

    name: str = MISSING
    flip: bool = MISSING
    crop_size: Optional[int] = MISSING
    optimizer: Optimizer = MISSING
    learning_rate: float = MISSING
    momentum: float = MISSING
    lr_reference_batch: Optional[int] = MISSING
    schedule: Schedule = MISSING
    lr_boundaries: List[int] = MISSING
    lr_decay: float = MISSING
    lr_warmup_steps: int = MISSING
    mixup_alpha: float = MISSING
    label_smoothing: float = MISSING
    from_logits: bool = MISSING
    early_stopping_patience: Optional[int] = MISSING


@dataclass
class BitModel(TrainingRecipe):
    """conf/model/bit.yaml."""

    handle: str = MISSING
    cache_dir: str = MISSING
    backbone: Backbone = MISSING
    weights: Optional[str] = MISSING
    block_units: List[int] = MISSING
    width_factor: int = MISSING
    trainable_backbone: bool = MISSING


@dataclass
class ResizerDensenetModel(TrainingRecipe):
    """conf/model/resizer_densenet.yaml and densenet.yaml."""

    learnable_resizer: bool = MISSING
    target_size: Optional[int] = MISSING
    filters: int = MISSING
    num_res_blocks: int = MISSING
    interpolation: str = MISSING
    bn_momentum: float = MISSING


@dataclass
class Dataset:
    """What every dataset file sets."""

    source: str = MISSING
    name: str = MISSING
    image_size: int = MISSING


@dataclass
class TfdsDataset(Dataset):
    """conf/dataset/tf_flowers.yaml, cats_vs_dogs.yaml: a prepared TFDS folder, named splits."""

    data_dir: str = MISSING
    version: Optional[str] = MISSING
    train_split: str = MISSING
    val_split: str = MISSING


@dataclass
class DigitsDataset(Dataset):
    """conf/dataset/digits.yaml: a validation share held out by `seed`."""

    val_fraction: float = MISSING


@dataclass
class ImageFolderDataset(DigitsDataset):
    """conf/dataset/image_folder.yaml."""

    path: str = MISSING
    checked_images_cache: Optional[str] = MISSING  # data/decode_check.py; null: decode every run


# Named in the model and dataset files' defaults lists (`- /bit_model_schema@model`).
GROUP_SCHEMAS = {
    "bit_model_schema": BitModel, "resizer_densenet_model_schema": ResizerDensenetModel,
    "tfds_dataset_schema": TfdsDataset, "digits_dataset_schema": DigitsDataset,
    "image_folder_dataset_schema": ImageFolderDataset,
}


@dataclass
class RunConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    device: DeviceConfig = field(default_factory=DeviceConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    batch_size: int = 64  # the global batch (split across replicas); every model file sets it
    epochs: int = 5  # every model file sets it
    steps_per_epoch: Optional[int] = None
    seed: int = 42
    deterministic: bool = False
    static_shape: Optional[bool] = None
    log_steps: int = 10
    divergence_factor: Optional[float] = 1000.0
    case_kind: CaseKind = CaseKind.acc
    modelzoo: Optional[ModelZoo] = None
    jit_compile: Optional[bool] = None  # null: Keras 2's default (off); true needs TF >= 2.8
    steps_per_execution: int = 1
    threads: ThreadsConfig = field(default_factory=ThreadsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    optimized_metric: OptimizedMetric = OptimizedMetric.val_accuracy
    output_dir: str = MISSING


ConfigStore.instance().store(name="schema", node=RunConfig)
for _name, _schema in GROUP_SCHEMAS.items():
    ConfigStore.instance().store(name=_name, node=_schema)
# conf/hparams_search/optuna.yaml: the sweeper's direction follows optimized_metric.
OmegaConf.register_new_resolver("runner.direction", direction, replace=True)
