"""Hold the experiment plan and report settings as frozen dataclasses, parsed from report.toml."""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A setting that is unknown, mistyped or impossible; the CLI exits 2 on it."""


@dataclass(frozen=True)
class GradientConfig:
    depths: tuple[int, ...] = (2, 5, 10, 25, 50, 75)
    bn_every: tuple[int | None, ...] = (None, 10, 5, 3, 1)  # None: no BatchNorm
    use_skip: tuple[bool, ...] = (False, True)
    n_hid: int = 128
    n_inits: int = 30  # the lab's n_iter: initialisations averaged per cell
    n_points: int = 256  # evenly spaced inputs on x_range
    x_min: float = -3.0
    x_max: float = 3.0
    seed: int = 123  # the lab's torch.manual_seed(123), set once per cell
    train_lr: float = 0.1  # the lab's train_one_epoch: one SGD step
    n_train_points: int = 10  # train_one_epoch fits cos(x) on this many points
    max_lag: int = 8  # autocorrelation reported for lags 1..max_lag

    def validate(self) -> None:
        _check_grid("gradients", self.depths, self.bn_every, self.use_skip, min_depth=2)
        if 2 not in self.depths:  # gradient_metrics.BASELINE_DEPTH; without it "Vanishing: no" would be unfounded
            raise ConfigError("gradients.depths must include 2: ratio_to_depth2 and the vanishing / exploding "
                              f"verdicts compare every cell with the depth-2 net, got {list(self.depths)}")
        _check_positive("gradients", n_hid=self.n_hid, n_inits=self.n_inits, n_points=self.n_points,
                        n_train_points=self.n_train_points, max_lag=self.max_lag, train_lr=self.train_lr)
        if not self.x_min < self.x_max:
            raise ConfigError(f"gradients.x_min ({self.x_min}) must be below gradients.x_max ({self.x_max})")
        if self.max_lag >= self.n_points - 1:
            raise ConfigError(f"gradients.max_lag ({self.max_lag}) must be below n_points - 1 ({self.n_points - 1})")


@dataclass(frozen=True)
class CifarConfig:
    depths: tuple[int, ...] = (3, 5, 10, 20)
    bn_every: tuple[int | None, ...] = (None, 9, 7, 3, 1)  # None: no BatchNorm
    use_skip: tuple[bool, ...] = (False, True)
    classes: tuple[str, ...] = ("airplane", "bird")  # chosen by name; the label is the position here
    n_hid: int = 64
    n_epochs: int = 20
    batch_size: int = 512
    lr: float = 0.01
    momentum: float = 0.9
    val_fraction: float = 0.2  # of the official training images, stratified by class
    split_seed: int = 0  # the training/validation split does not depend on the model seed
    n_seeds: int = 1  # every cell is trained once per seed
    seed: int = 123
    max_images_per_class: int | None = None  # None: all; the quick preset trains on a subset

    def validate(self) -> None:
        _check_grid("cifar", self.depths, self.bn_every, self.use_skip, min_depth=2)
        _check_positive("cifar", n_hid=self.n_hid, n_epochs=self.n_epochs, batch_size=self.batch_size,
                        lr=self.lr, n_seeds=self.n_seeds)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"cifar.classes must name at least two different classes, got {list(self.classes)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"cifar.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"cifar.momentum must be in [0, 1), got {self.momentum}")
        if self.max_images_per_class is not None and self.max_images_per_class < 10:
            raise ConfigError(f"cifar.max_images_per_class must be at least 10, got {self.max_images_per_class}")


@dataclass(frozen=True)
class ReportMeta:
    title: str = "Residual networks: gradients at initialisation and overfitting"
    author: str = "resreport"
    course: str = ""
    subtitle: str = ""

    def validate(self) -> None:
        if not self.title.strip():
            raise ConfigError("report.title must not be empty")


@dataclass(frozen=True)
class Thresholds:
    """Cut-offs the commentary rules use to turn metrics into findings."""

    vanishing_ratio: float = 1e-2  # mean |grad| below this fraction of the depth-2 cell: vanishing
    exploding_ratio: float = 1e2  # mean |grad| above this multiple of the depth-2 cell: exploding
    shattered_autocorr: float = 0.5  # mean per-initialisation lag-1 autocorrelation below this: shattered
    smooth_autocorr: float = 0.9  # at or above this: smooth
    artefact_rel_grad: float = 1e-4  # BatchNorm before the output, seed |grad| below this x per_sample |grad|: artefact
    chance_margin: float = 0.05  # validation accuracy within this of chance: failed to train
    overfit_gap: float = 0.1  # final validation minus training loss above this: overfitting
    effect_min_gap: float = 0.05  # mean generalisation-gap difference between groups below this: no clear effect
    change_rtol: float = 0.05  # changes.md: a metric moved when its relative change exceeds this

    def validate(self) -> None:
        _check_positive("thresholds", **dataclasses.asdict(self))
        if not self.vanishing_ratio < 1 < self.exploding_ratio:
            raise ConfigError("thresholds: need vanishing_ratio < 1 < exploding_ratio")
        if not 0 < self.shattered_autocorr <= self.smooth_autocorr <= 1:
            raise ConfigError("thresholds: need 0 < shattered_autocorr <= smooth_autocorr <= 1")


@dataclass(frozen=True)
class Config:
    report: ReportMeta = field(default_factory=ReportMeta)
    gradients: GradientConfig = field(default_factory=GradientConfig)
    cifar: CifarConfig = field(default_factory=CifarConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)

    def validate(self) -> "Config":
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        return self


def quick(config: Config) -> Config:
    """Shrink the grids to a few small cells that run in seconds (CI and smoke tests)."""
    gradients = dataclasses.replace(config.gradients, depths=(2, 5, 10), bn_every=(None, 3), n_inits=4, n_points=64)
    cifar = dataclasses.replace(config.cifar, depths=(3, 5), bn_every=(None, 1), n_epochs=3,
                                max_images_per_class=600, n_seeds=1)
    return dataclasses.replace(config, gradients=gradients, cifar=cifar)


def load_config(path: Path | None = None, *, use_quick: bool = False, n_seeds: int | None = None) -> Config:
    """Read report.toml (defaults where absent), apply the quick preset and overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass --config FILE or create it")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    config = _from_dict(Config, raw, "")
    if use_quick:
        config = quick(config)
    if n_seeds is not None:
        config = dataclasses.replace(config, cifar=dataclasses.replace(config.cifar, n_seeds=n_seeds))
    return config.validate()


def _from_dict(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _from_dict(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value, hint, key: str):
    """Check a TOML value against a field's type; 'none' stands for None (TOML has no null)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key} must be a non-empty list, got {value!r}")
        return tuple(_coerce(item, args[0], key) for item in value)
    if origin in (typing.Union, types.UnionType):
        if value == "none" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def _check_grid(section: str, depths, bn_every, use_skip, *, min_depth: int) -> None:
    for depth in depths:
        if depth < min_depth:
            raise ConfigError(f"{section}.depths: every depth must be at least {min_depth}, got {depth}")
    for every in bn_every:
        if every is not None and every < 1:
            raise ConfigError(f"{section}.bn_every: each value must be a positive integer or \"none\", got {every}")
    for name, values in (("depths", depths), ("bn_every", bn_every), ("use_skip", use_skip)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{section}.{name} lists a value twice: {list(values)}")


def _check_positive(section: str, **values) -> None:
    for name, value in values.items():
        if value is None or not value > 0:  # `not >` also refuses nan, which TOML allows
            raise ConfigError(f"{section}.{name} must be positive, got {value}")
