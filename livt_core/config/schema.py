"""The schema of a run's config: a shared base of the fields every run has, the three run kinds,
and constrained types for the checks several fields share.

A run is described by one of :class:`PretrainConfig` (MGP), :class:`FinetuneConfig` (BFT) or
:class:`EvaluateConfig`. Every field carries the paper's default (Xu et al., "Learning Imbalanced
Data with Vision Transformers", CVPR 2023; see ``docs/method.md``); presets override the defaults
per dataset, and users override presets (``livt_core.config.resolve``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from livt_core import catalog
from livt_core.errors import ConfigError
from livt_core.limits import (
    MAX_ACCUM_ITER,
    MAX_BATCH_SIZE,
    MAX_CACHE_MB,
    MAX_CHANNELS,
    MAX_EFFECTIVE_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_IMBALANCE,
    MAX_IMG_SIZE,
    MAX_LT_SEED,
    MAX_NUM_WORKERS,
    MAX_SEED,
    MAX_STEPS,
    MAX_THREADS,
    MODEL_KWARG_BOUNDS,
)
from livt_core.paths import PathStr, SafeStr, unsafe_json_values


def _fail(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error whose message carries the fix; ``field`` names the setting when the
    check spans several fields (pydantic reports those at the model's root)."""
    return PydanticCustomError("livt_config", message, {"field": field} if field else None)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "must be a number, not true/false; use a number")
    return value


#: Whole numbers only: ``true`` or ``1.0`` are refused rather than read as 1.
StrictInt = Annotated[int, Strict()]
#: A finite number (``allow_inf_nan=False`` of the models), never a boolean.
Number = Annotated[float, BeforeValidator(_not_bool)]


def _positive(v: int, info: ValidationInfo) -> int:
    if v <= 0:
        raise _fail(f"must be a positive integer; set {info.field_name} to 1 or more")
    return v


def _optional_positive(v: int | None, info: ValidationInfo) -> int | None:
    if v is not None and v <= 0:
        raise _fail(f"must be a positive integer or null; set {info.field_name} accordingly")
    return v


def _non_negative(v: float, info: ValidationInfo) -> float:
    if v < 0:
        raise _fail(f"must be ≥ 0; set {info.field_name} to 0 or more")
    return v


def _probability(v: float, info: ValidationInfo) -> float:
    if not 0.0 <= v < 1.0 + 1e-12:
        raise _fail(f"must lie in [0, 1]; set {info.field_name} accordingly")
    return v


def _alpha(v: float, info: ValidationInfo) -> float:
    if v < 0:
        raise _fail(f"must be ≥ 0 (0 switches it off); set {info.field_name}=0 or more")
    return v


# The bounds the validators check are also stated in the JSON schema (``json_schema_extra``),
# which the API's OpenAPI spec of a job's run fields is generated from.
#: A whole number ≥ 1.
PositiveInt = Annotated[
    StrictInt, AfterValidator(_positive), Field(json_schema_extra={"minimum": 1})
]
#: A whole number ≥ 1, or null.
OptionalPositiveInt = Annotated[
    StrictInt | None,
    AfterValidator(_optional_positive),
    Field(json_schema_extra={"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}),
]
#: A finite number ≥ 0.
NonNegative = Annotated[
    Number, AfterValidator(_non_negative), Field(json_schema_extra={"minimum": 0})
]
#: A probability in [0, 1].
Probability = Annotated[
    Number, AfterValidator(_probability), Field(json_schema_extra={"minimum": 0, "maximum": 1})
]
#: A Beta-distribution α of Mixup / CutMix: ≥ 0, 0 switches it off.
MixAlpha = Annotated[Number, AfterValidator(_alpha), Field(json_schema_extra={"minimum": 0})]

Epochs = Annotated[
    PositiveInt,
    Field(le=MAX_EPOCHS, description="training epochs (≤ 10,000; the paper's longest is 800)"),
]
WarmupEpochs = Annotated[
    NonNegative,
    Field(le=MAX_EPOCHS, description="linear warmup epochs (≤ 10,000, like epochs)"),
]
BatchSize = Annotated[
    PositiveInt,
    Field(le=MAX_BATCH_SIZE, description="images per device per step (≤ 16,384)"),
]
Seed = Annotated[
    StrictInt,
    Field(
        ge=0,
        le=MAX_SEED,
        description="random seed in [0, 2^31 - 1] (the run adds 1000 × epoch + rank to it and "
        "numpy seeds are 32-bit)",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )


class DataConfig(_Strict):
    """Where the images come from and how they are sampled into a long-tailed set."""

    dataset: SafeStr = Field("fashion-mnist-lt", description="data set kind (see `livt_core.data`)")
    root: PathStr | None = Field(None, description="data folder; None = the bundled demo subset")
    img_size: StrictInt = Field(
        224,
        le=MAX_IMG_SIZE,
        json_schema_extra={"minimum": 8},
        description="input resolution in pixels (8-2,048: a ViT-B/16 at 2,048 px has 16k "
        "tokens, beyond one GPU's memory)",
    )
    in_chans: StrictInt | None = Field(
        None, ge=1, le=MAX_CHANNELS, description="image channels (1-16); None = the data set's own"
    )
    imbalance_factor: Number = Field(
        100.0,
        le=MAX_IMBALANCE,
        description="γ = n_max / n_min for the *-lt sets (1-10^6; the literature uses 10-500)",
    )
    profile: Literal["exp", "step"] = "exp"
    n_max: StrictInt | None = Field(
        None,
        le=MAX_IMAGES,
        description="images of the largest class (≤ 10^8); None = the data set's default",
    )
    lt_seed: StrictInt = Field(
        0,
        ge=0,
        le=MAX_LT_SEED,
        description="seed of the shuffle that picks the LT subset, in [0, 2^32 - 1] (numpy's "
        "RandomState range)",
    )
    val_per_class: StrictInt | None = Field(
        None, le=MAX_IMAGES, description="held-out validation images per class (≤ 10^8)"
    )
    train_split: PathStr | None = Field(
        None, description="split file for `splitfile` data sets, relative to root"
    )
    val_split: PathStr | None = Field(None, description="validation split file, relative to root")
    test_split: PathStr | None = Field(None, description="test split file, relative to root")
    mean: tuple[Number, ...] | None = Field(
        None, max_length=MAX_CHANNELS, description="None = the data set's statistics"
    )
    std: tuple[Number, ...] | None = Field(None, max_length=MAX_CHANNELS)
    cache_mb: StrictInt = Field(
        2048,
        ge=0,
        le=MAX_CACHE_MB,
        description="image-file data sets whose decoded images fit this many MiB are decoded "
        "once into memory shared with the loader processes (0: read the files every epoch)",
    )
    num_workers: StrictInt | None = Field(
        None,
        le=MAX_NUM_WORKERS,
        json_schema_extra={
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_NUM_WORKERS},
                {"type": "null"},
            ]
        },
        description="DataLoader worker processes per rank (0-256: more than any one machine's "
        "cores; 0 loads in the training process); None = auto, sized at run time to the "
        "process's share of the cores: 0 on one core, else half the share, at most 4, or with "
        "threads set the cores those leave, at most 4 (`livt_core.perf.plan_cpus`)",
    )

    @field_validator("img_size")
    @classmethod
    def _img_size(cls, v: int) -> int:
        if v < 8:
            raise _fail("must be at least 8 pixels; set data.img_size to e.g. 28, 32 or 224")
        return v

    @field_validator("imbalance_factor")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if v < 1:
            raise _fail("must be ≥ 1 (1 = balanced); set data.imbalance_factor to e.g. 10 or 100")
        return v

    @field_validator("n_max", "val_per_class")
    @classmethod
    def _positive_count(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise _fail("must be a positive number of images, or null for the default")
        return v

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise _fail("must be ≥ 0; set data.num_workers=0 to load in the main process")
        return v

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        names = catalog.list_datasets()
        if v not in names:
            raise _fail(f"unknown data set {v!r}; use one of: {', '.join(names)}")
        return v

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and not all(s > 0 for s in v):
            raise _fail("every std value must be > 0 (images are divided by it)")
        return v

    @model_validator(mode="after")
    def _mean_std(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise _fail("set both mean and std, or neither", "std" if self.std is None else "mean")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise _fail("mean and std must have one value per channel each", "std")
        if self.in_chans is not None:
            for name, values in (("mean", self.mean), ("std", self.std)):
                if values is not None and len(values) not in (1, self.in_chans):
                    raise _fail(
                        f"has {len(values)} values for in_chans={self.in_chans}; "
                        f"{channel_count_fix(self.in_chans)}",
                        name,
                    )
        return self


def suggested_warmup(epochs: int) -> float:
    """A warmup of 10 % of ``epochs`` (the paper's fine-tuning ratio), to two decimals."""
    return round(epochs * 0.1, 2)


def channel_count_fix(in_chans: int) -> str:
    """The fix for a mean / std of the wrong length: one value, or one per channel."""
    return "give 1 value" if in_chans == 1 else f"give 1 value or {in_chans} values"


def _check_model(name: str, *, mae: bool, kind: str) -> str:
    names = catalog.list_models()
    wanted = [n for n in names if catalog.is_mae_model(n) == mae]
    if name not in names:
        raise _fail(f"unknown model {name!r}; use one of: {', '.join(wanted)}")
    if catalog.is_mae_model(name) != mae:
        raise _fail(
            f"{kind} needs {'an MAE (mae_vit_*)' if mae else 'a classifier (vit_*)'} model, got "
            f"{name!r}; use one of: {', '.join(wanted)}"
        )
    return name


def _check_device(v: str) -> str:
    if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise _fail("use auto, cpu, cuda or cuda:N")
    return v


def _check_threads(v: int | None) -> int | None:
    if v is not None and v <= 0:
        raise _fail(
            "must be a positive integer; set threads to 1 or more, or null for the job's share "
            "of the cores"
        )
    if v is not None and v > MAX_THREADS:
        raise _fail(f"must be at most {MAX_THREADS}; set threads to the machine's core count")
    return v


def _check_json_values(v: dict[str, Any]) -> dict[str, Any]:
    """Free-form settings (model_kwargs, loss_kwargs): no NUL characters, no NaN / Infinity."""
    for loc, message in unsafe_json_values(v):
        raise _fail(message, ".".join(str(p) for p in loc))
    return v


def _check_model_kwargs(v: dict[str, Any]) -> dict[str, Any]:
    _check_json_values(v)
    for key, (low, high) in MODEL_KWARG_BOUNDS.items():
        if key not in v:
            continue
        value = v[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(f"must be a whole number; set model_kwargs.{key} to e.g. 12", key)
        if not low <= value <= high:
            raise _fail(
                f"must lie in [{low}, {high}] (larger models do not fit a GPU); "
                f"set model_kwargs.{key} accordingly",
                key,
            )
    mlp_ratio = v.get("mlp_ratio")
    if mlp_ratio is not None and (
        isinstance(mlp_ratio, bool)
        or not isinstance(mlp_ratio, int | float)
        or not 0 < mlp_ratio <= 16
    ):
        raise _fail("must be a number in (0, 16]; the ViTs use mlp_ratio=4", "mlp_ratio")
    return v


Threads = Annotated[
    StrictInt | None,
    Field(
        description="torch intra-op threads of each training process (≤ 1,024); None = the "
        "process's share of the cores it was given ($LIVT_JOB_CPUS, else its CPU affinity, "
        "divided among local ranks, less one per loader worker; at least 1)",
    ),
    AfterValidator(_check_threads),
]
Device = Annotated[
    SafeStr, AfterValidator(_check_device), Field(description="auto, cpu, cuda or cuda:N")
]
#: ``create_model`` overrides, bounded.
ModelKwargs = Annotated[dict[str, Any], AfterValidator(_check_model_kwargs)]
#: Free-form settings: no NUL characters, no NaN / Infinity.
JsonSettings = Annotated[dict[str, Any], AfterValidator(_check_json_values)]
Amp = Literal["auto", "bf16", "fp16", "off"]
Compile = Annotated[
    Literal["auto", "on", "off"],
    Field(
        description="torch.compile (inductor) of the training model: on, off, or auto (on "
        "where it pays off: CUDA with Triton; eager on CPU); a failing compile under auto "
        "falls back to eager with the reason logged",
    ),
]


class RunBase(_Strict):
    """The fields every run has (each kind sets its own ``model``)."""

    data: DataConfig = Field(default_factory=DataConfig)
    model_kwargs: ModelKwargs = Field(
        default_factory=dict,
        description="extra create_model overrides (depth ≤ 64, embed_dim ≤ 8,192, num_heads ≤ "
        "128, ...: ViT-G is 48 deep and 1,664 wide)",
    )
    amp: Amp = "auto"
    device: Device = "auto"
    threads: Threads = None
    seed: Seed = 0
    recipe_notes: list[SafeStr] = Field(
        default_factory=list,
        max_length=100,
        description="how the settings were chosen: one line per rule of the auto recipe or "
        "adjustment made when the config was resolved (written by the resolver)",
    )


class _TrainBase(RunBase):
    """Optimisation settings shared by the two training stages."""

    epochs: Epochs = 100
    compile: Compile = "auto"
    warmup_epochs: WarmupEpochs = 10.0
    batch_size: BatchSize = 64
    accum_iter: PositiveInt = Field(
        1,
        le=MAX_ACCUM_ITER,
        description="gradient accumulation steps (≤ 4,096: the paper's 4,096 batch from one "
        "image per step)",
    )
    effective_batch_size: OptionalPositiveInt = Field(
        None,
        le=MAX_EFFECTIVE_BATCH,
        description="if set, accum_iter = effective_batch_size / (batch_size × world size); ≤ 2^20",
    )
    blr: Number = Field(1e-3, description="base lr; lr = blr × effective batch / 256")
    lr: Number | None = Field(None, description="absolute lr; overrides blr when set")
    min_lr: NonNegative = 0.0
    weight_decay: NonNegative = 0.05
    betas: tuple[Number, Number] = (0.9, 0.999)
    clip_grad: Number | None = Field(None, description="max gradient norm; None = no clipping")
    max_steps_per_epoch: OptionalPositiveInt = Field(
        None, le=MAX_STEPS, description="cap on steps per epoch (smoke runs; ≤ 10^8)"
    )

    @field_validator("blr")
    @classmethod
    def _blr(cls, v: float) -> float:
        if not v > 0:
            raise _fail("must be > 0; set blr to a positive base learning rate such as 1e-3")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise _fail("must be > 0; set lr to a positive value or null to derive it from blr")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise _fail("both AdamW betas must lie in [0, 1); e.g. betas=[0.9, 0.999]")
        return v

    @field_validator("clip_grad")
    @classmethod
    def _clip(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise _fail("must be > 0 or null (no clipping)")
        return v

    @model_validator(mode="after")
    def _lr_range(self) -> _TrainBase:
        if self.lr is not None and self.min_lr > self.lr:
            raise _fail("must not exceed lr; lower min_lr", "min_lr")
        return self

    @model_validator(mode="after")
    def _warmup_below_epochs(self) -> _TrainBase:
        if self.warmup_epochs > 0 and self.warmup_epochs >= self.epochs:
            raise _fail(
                f"is {self.warmup_epochs:g}, not below epochs={self.epochs}, so the learning rate "
                f"would never reach its peak; set warmup_epochs to about "
                f"{suggested_warmup(self.epochs):g} (10 % of the epochs) or raise epochs",
                "warmup_epochs",
            )
        return self


class PretrainConfig(_TrainBase):
    """MGP: masked generative pretraining (MAE) on the long-tailed training set."""

    kind: Literal["pretrain"] = "pretrain"
    model: SafeStr = "mae_vit_base_patch16"
    mask_ratio: Number = 0.75
    norm_pix_loss: bool = True
    epochs: Epochs = 800
    warmup_epochs: WarmupEpochs = 40.0
    blr: Number = 1.5e-4
    betas: tuple[Number, Number] = (0.9, 0.95)
    weight_decay: NonNegative = 0.05
    min_lr: NonNegative = 0.0

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v, mae=True, kind="pretrain")

    @field_validator("mask_ratio")
    @classmethod
    def _mask_ratio(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise _fail("must lie strictly between 0 and 1; the paper uses mask_ratio=0.75")
        return v


class FinetuneConfig(_TrainBase):
    """BFT: balanced fine-tuning of a ViT classifier, by default with the Bal-BCE loss."""

    kind: Literal["finetune"] = "finetune"
    model: SafeStr = "vit_base_patch16"
    init: PathStr | None = Field(None, description="MGP (or classifier) checkpoint to start from")
    global_pool: bool = Field(True, description="mean of patch tokens → fc_norm → head")
    drop_path: Probability = 0.1
    layer_decay: Number = 0.75
    loss: SafeStr = "bal_bce"
    tau: Number = Field(1.0, description="τ of Bal-BCE / Bal-CE")
    loss_kwargs: JsonSettings = Field(default_factory=dict)
    smoothing: Probability = 0.1
    mixup: MixAlpha = 0.8
    cutmix: MixAlpha = 1.0
    mixup_prob: Probability = 1.0
    mixup_switch_prob: Probability = 0.5
    crop_scale: tuple[Number, Number] = Field(
        (0.08, 1.0), description="area range of the random resized crop (timm's --scale)"
    )
    auto_augment: SafeStr | None = "rand-m9-mstd0.5-inc1"
    reprob: Probability = 0.25
    remode: Literal["pixel", "rand", "const"] = "pixel"
    epochs: Epochs = 100
    warmup_epochs: WarmupEpochs = 10.0
    blr: Number = 1e-3
    min_lr: NonNegative = 1e-6
    betas: tuple[Number, Number] = (0.9, 0.99)
    weight_decay: NonNegative = 0.05
    eval_batch_size: BatchSize | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v, mae=False, kind="finetune")

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in catalog.LOSSES:
            raise _fail(f"unknown loss {v!r}; use one of: {', '.join(catalog.list_losses())}")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        low, high = v
        if not 0.0 < low <= high <= 1.0:
            raise _fail(
                f"must be [low, high] with 0 < low ≤ high ≤ 1, got {list(v)}; "
                "the paper uses crop_scale=[0.08, 1.0]"
            )
        return v

    @field_validator("layer_decay")
    @classmethod
    def _layer_decay(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise _fail("must lie in (0, 1]; 1 = no layer-wise decay, the paper uses 0.75")
        return v

    @field_validator("tau")
    @classmethod
    def _tau(cls, v: float) -> float:
        if v < 0:
            raise _fail("must be ≥ 0; the paper uses tau=1 (1.05 on Places-LT)")
        return v

    @model_validator(mode="after")
    def _soft_targets(self) -> FinetuneConfig:
        mixing = (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0
        if mixing and self.loss not in catalog.SOFT_TARGET_LOSSES:
            raise _fail(
                f"loss {self.loss!r} takes hard labels only, but Mixup/CutMix make soft targets; "
                f"set mixup=0 and cutmix=0, or use one of: "
                f"{', '.join(sorted(catalog.SOFT_TARGET_LOSSES))}",
                "loss",
            )
        return self

    @model_validator(mode="after")
    def _loss_settings(self) -> FinetuneConfig:
        """Checks the settings against the loss's rules (tau on a loss without a prior bias,
        smoothing on a margin loss, unknown loss_kwargs) so that they fail when the run is
        configured rather than when it starts; the values of loss_kwargs are checked when the
        loss is built (:func:`check_loss_build`)."""
        try:
            catalog.check_loss_settings(
                self.loss, tau=self.tau, smoothing=self.smoothing, options=self.loss_kwargs
            )
        except ConfigError as exc:
            message = exc.message + (f"; {exc.fix}" if exc.fix else "")
            raise _fail(message, exc.field) from None
        return self


class EvaluateConfig(RunBase):
    """Long-tail evaluation of a classifier checkpoint on a held-out split."""

    kind: Literal["evaluate"] = "evaluate"
    model: SafeStr = "vit_base_patch16"
    global_pool: bool = True
    checkpoint: PathStr | None = Field(None, description="classifier checkpoint to evaluate")
    split: Literal["val", "test"] = "test"
    batch_size: BatchSize = 128
    posthoc_tau: list[Number] = Field(
        default_factory=list,
        max_length=64,
        description="τ values of post-hoc logit adjustment (z − τ·log π): result.posthoc gets "
        "overall / many / medium / few for each, from one pass of the model (0-10, at most 64)",
    )

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        return _check_model(v, mae=False, kind="evaluate")

    @field_validator("posthoc_tau")
    @classmethod
    def _posthoc_tau(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= t <= 10.0 for t in v):
            raise _fail("every τ must lie in [0, 10]; e.g. posthoc_tau=[0, 0.5, 1, 1.5, 2]")
        if len(set(v)) != len(v):
            raise _fail("lists a τ twice; give each τ once")
        return v


RunConfig = Annotated[PretrainConfig | FinetuneConfig | EvaluateConfig, Field(discriminator="kind")]
CONFIG_CLASSES: dict[str, type[RunBase]] = {
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
}
