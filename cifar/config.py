"""Typed hyperparameters, one config per model family, defaults equal to the reference write-up.

The CLI and the dashboard both go through `parse_config`, which converts strings and rejects
bad values with a message naming the field and its allowed range.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (32, 32, 3)
# The temperatures a calibration fit searches (`cifar.calibration`): it ends inside them or keeps
# T = 1, so a calibration.json outside them was not written by it (`cifar.store.run_files` refuses it).
# Far outside them a temperature breaks the answers: a tiny one sends log(p) / T to infinities
# (NaN probabilities), a huge one makes them near uniform, and float32 rounding reorders the top class.
TEMPERATURE_RANGE = (0.05, 20.0)
LARGEST_SEED = 2**31 - 1
MOST_SEEDS = 10  # `train --seeds`: a group larger than this is a sweep, not a repeat

# The reference write-up's figures (CIFAR-10, 50k train / 10k test).
REFERENCE_FIGURES = {
    "baseline": {"train_accuracy": None, "test_accuracy": 0.711},
    "transfer": {"train_accuracy": 0.8551, "test_accuracy": 0.8375},
}


def keras_home() -> Path:
    """Where data, backbone weights and feature caches live (never in git)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")  # (empty: unset)


def artifacts_dir() -> Path:
    """Root of run folders; `CIFAR_ARTIFACTS` overrides it (tests, several checkouts). Set but
    empty, it is unset (not the current folder, as `Path("")` would make it)."""
    default = Path(__file__).resolve().parent.parent / "artifacts"
    return Path(os.environ.get("CIFAR_ARTIFACTS") or default)


class ConfigError(ValueError):
    """A hyperparameter was refused; the message names the field and the allowed values.

    `kinds` holds pydantic's error types (e.g. "literal_error"), for callers that tell a value
    an older version saved from damage (`cifar.store.run_files`)."""

    def __init__(self, message: str, kinds: tuple[str, ...] = ()):
        super().__init__(message)
        self.kinds = kinds


def _batch_size(default: int, note: str = "") -> Any:
    """The batch-size field; each family states its own default."""
    return Field(default, ge=1, le=4096, description=f"images per gradient step{note}")


class _Config(BaseModel):
    """Settings shared by both families (`batch_size` has no default here: each family sets its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info):
        """`True` is not the number 1: refuse booleans for numeric fields."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in (int, float):
            raise ValueError("expected a number, got a boolean")
        return value

    # Shared training settings.
    epochs: int = Field(10, ge=1, le=500, description="passes over the training split")
    batch_size: int  # declared here to keep its place in config.json; default per family
    optimizer: Literal["adam", "sgd", "rmsprop", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10, description="optimizer step size (peak for onecycle)")
    lr_schedule: Literal["constant", "onecycle", "triangle"] = Field(
        "constant",
        description="onecycle: linear warm-up over 20 % of the steps, then linear decay to 0; "
        "triangle: 0.2 -> 1 -> 0.07 of the peak, the peak at 23 % (airbench94)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty on kernels")
    validation_size: int = Field(
        5000, ge=0, le=25000, description="training images held out for curves and early stopping"
    )
    early_stopping_patience: int = Field(
        0, ge=0, le=100, description="epochs without val_loss improvement before stopping (0: off)"
    )
    seed: int = Field(0, ge=0, le=LARGEST_SEED)


class BaselineConfig(_Config):
    """From-scratch CNN. Default: the classic TensorFlow tutorial CNN (about 70 % test)."""

    model: Literal["baseline"] = "baseline"
    batch_size: int = _batch_size(32, " (Keras' default)")
    architecture: Literal["tutorial", "airbench"] = Field(
        "tutorial", description="tutorial: TensorFlow's 3-conv CNN; airbench: airbench94's shape"
    )
    width: int = Field(64, ge=8, le=512, description="airbench first block width (64 = airbench94)")
    augment: bool = Field(False, description="random flip + 2 px translate during training")
    tta_flip: bool = Field(False, description="average test predictions over the image and its flip")
    dropout: float = Field(0.0, ge=0, lt=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's Nesterov momentum (airbench94: 0.85)")
    # airbench94's recipe beyond its shape (cifar/modeling/airbench.py says what each follows).
    stem: Literal["conv", "whiten"] = Field(
        "conv",
        description="airbench first layer: conv (3x3 + BatchNorm) or whiten (frozen 2x2 patch whitening)",
    )
    bn_scale: bool = Field(True, description="airbench BatchNorm learns a scale (airbench94: no)")
    bias_lr_scale: float = Field(
        1.0,
        ge=1,
        le=1024,
        description="airbench BatchNorm shifts' SGD learning-rate multiplier (airbench94: 64)",
    )
    dirac_init: bool = Field(False, description="airbench convolutions start as the identity where they can")
    lookahead: bool = Field(
        False, description="airbench94's lookahead: weights pulled to their average every 5 steps"
    )
    alternating_flip: bool = Field(
        False, description="with augment: flip each image every other epoch, not at random (airbench94)"
    )
    tta_translate: bool = Field(
        False, description="also average over 1 px shifts up-left and down-right (airbench94's multi-crop)"
    )
    precision: Literal["float32", "mixed_bfloat16"] = Field(
        "float32",
        description="mixed_bfloat16: layers compute in bfloat16, weights stay float32 "
        "(faster where the CPU has AVX512_BF16 or the GPU bfloat16 units)",
    )

    @model_validator(mode="after")
    def _airbench_options_need_airbench(self) -> BaselineConfig:
        changed = [
            name for name in AIRBENCH_ONLY if getattr(self, name) != type(self).model_fields[name].default
        ]
        if changed and self.architecture != "airbench":
            raise ValueError(f"{', '.join(changed)} apply to architecture='airbench' only")
        if self.alternating_flip and not self.augment:
            raise ValueError("alternating_flip is a kind of augmentation: set augment=true")
        sgd_only = [
            name for name in ("momentum", "bias_lr_scale") if getattr(self, name) != SGD_DEFAULTS[name]
        ]
        if sgd_only and self.optimizer != "sgd":
            raise ValueError(f"{', '.join(sgd_only)} apply to optimizer='sgd' only")
        return self


AIRBENCH_ONLY = ("stem", "bn_scale", "bias_lr_scale", "dirac_init")
SGD_DEFAULTS = {"momentum": 0.9, "bias_lr_scale": 1.0}


# InceptionV3 blocks whose average-pooled outputs can make up the features, and their widths.
POOLED_LAYERS = {"mixed10": ("mixed10",), "mixed7-10": ("mixed7", "mixed8", "mixed9", "mixed10")}
BLOCK_WIDTHS = {"mixed7": 768, "mixed8": 1280, "mixed9": 2048, "mixed10": 2048}


class TransferConfig(_Config):
    """Frozen InceptionV3 + dense head. Defaults: exactly the reference write-up's model."""

    model: Literal["transfer"] = "transfer"
    batch_size: int = _batch_size(64)
    weights: Literal["auto", "keras", "google2015"] = Field(
        "auto", description="ImageNet weights: Keras' download, else Google's 2015 release"
    )
    architecture: Literal["keras", "exact2015"] = Field(
        "keras", description="exact2015: max pool in the last block's pool branch, as in 2015"
    )
    resize: Literal["upsample7", "bilinear", "bicubic", "nearest"] = Field(
        "upsample7", description="upsample7: UpSampling2D(7), 32 -> 224 px, as the reference"
    )
    input_size: int = Field(224, ge=75, le=512, description="side of the base's input in px")
    pooled_layers: Literal["mixed10", "mixed7-10"] = Field(
        "mixed10",
        description="blocks average-pooled into the features: mixed10 (2048-d, as the reference) "
        "or mixed7..mixed10 concatenated (6144-d)",
    )
    flip_features: bool = Field(False, description="add horizontally flipped training images")
    tta_flip: bool = Field(False, description="average test predictions over the image and its flip")
    standardize: bool = Field(
        False, description="scale each feature to zero mean and unit variance (training-set statistics)"
    )
    head_units: int = Field(256, ge=1, le=8192, description="width of the Dense(relu) layer")
    dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _upsample_needs_224(self) -> TransferConfig:
        if self.resize == "upsample7" and self.input_size != 224:
            raise ValueError("resize='upsample7' gives 32*7 = 224 px; set input_size=224")
        return self

    @property
    def feature_dim(self) -> int:
        """Width of the pooled features the head reads."""
        return sum(BLOCK_WIDTHS[name] for name in POOLED_LAYERS[self.pooled_layers])

    @property
    def feature_spec(self) -> dict[str, Any]:
        """Everything that changes the frozen base's output (names the feature cache)."""
        return {
            "architecture": self.architecture,
            "resize": self.resize,
            "input_size": self.input_size,
            "pooled_layers": self.pooled_layers,
        }


CONFIG_TYPES: dict[str, type[_Config]] = {"baseline": BaselineConfig, "transfer": TransferConfig}


BOUND_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def allowed_range(row: dict[str, Any]) -> str:
    """A `field_table` row's bounds as people read them: ">= 1, <= 500" ("" if it has none)."""
    return ", ".join(f"{symbol} {row[op]}" for op, symbol in BOUND_SYMBOLS.items() if op in row)


def field_table(model: str) -> list[dict[str, Any]]:
    """Name, type, default, bounds and help of every field (for forms and `--help`)."""
    rows = []
    for name, info in CONFIG_TYPES[model].model_fields.items():
        if name == "model":
            continue
        bounds = {}
        for meta in info.metadata:
            for key in ("ge", "gt", "le", "lt"):
                if hasattr(meta, key):
                    bounds[key] = getattr(meta, key)
        annotation = info.annotation
        choices = list(getattr(annotation, "__args__", ())) if _is_literal(annotation) else None
        rows.append(
            {
                "name": name,
                "type": "choice" if choices else annotation.__name__,
                "default": info.default,
                "choices": choices,
                "help": info.description or "",
                **bounds,
            }
        )
    return rows


def _is_literal(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is Literal


def parse_config(model: str, overrides: dict[str, Any] | None = None) -> _Config:
    """Build the typed config of `model` from overrides (strings allowed), or raise ConfigError."""
    if not isinstance(model, str) or model not in CONFIG_TYPES:
        raise ConfigError(f"unknown model {model!r}: choose one of {sorted(CONFIG_TYPES)}")
    values = {str(k).replace("-", "_"): v for k, v in (overrides or {}).items()}
    values.pop("model", None)
    try:
        return CONFIG_TYPES[model](**values)
    except ValidationError as error:
        kinds = tuple(problem["type"] for problem in error.errors())
        raise ConfigError(_explain(model, error), kinds) from None


def _explain(model: str, error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "config"
        if problem["type"] == "extra_forbidden":
            known = ", ".join(r["name"] for r in field_table(model))
            lines.append(f"{field}: unknown field for {model}; known fields: {known}")
        else:
            lines.append(f"{field}: {problem['msg']} (got {problem.get('input')!r})")
    return "; ".join(lines)


class EnsembleConfig(BaseModel):
    """Finished runs combined (`cifar.inference.ensemble`); nothing is trained, so no training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["ensemble"] = "ensemble"
    members: list[str] = Field(min_length=2, max_length=8, description="the member runs' ids")


def load_config(data: dict[str, Any]) -> _Config | EnsembleConfig:
    """Rebuild a config saved in a run folder."""
    if data.get("model") == "ensemble":
        try:
            return EnsembleConfig(**data)
        except ValidationError as error:
            kinds = tuple(problem["type"] for problem in error.errors())
            raise ConfigError(f"ensemble config: {error.errors()[0]['msg']}", kinds) from None
    return parse_config(data.get("model", ""), {k: v for k, v in data.items() if k != "model"})
