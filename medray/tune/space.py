"""The sweep file: a base run config, a search space over its keys, and how to search it.

    base: pneumoniamnist.yaml        # a run config, relative to this file
    set: {train: {epochs: 6}}        # fixed changes to the base, nested like a run config
    space:                           # dotted run-config keys -> one domain each
      model.backbone: {choice: [baseline_cnn, ensemble]}
      train.lr: {loguniform: [3e-4, 3e-3]}
      model.dropout: {uniform: [0.1, 0.5]}

Everything is validated before Ray starts: the sweep's own keys, every space key against the run
config's schema, and every value a domain can produce (choices, and both ends of a range) as part
of a full run config, so a trial never fails on a value the space allowed.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medray import storage
from medray.config import RunConfig, apply_override, read_yaml_mapping, validate_config
from medray.errors import MedrayError

Metric = Literal["val_auc", "val_loss", "val_accuracy"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Domain(_Section):
    """Exactly one of: a list of choices, a uniform range, a log-uniform range."""

    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Domain:
        kinds = [name for name in ("choice", "uniform", "loguniform") if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of {choice: [a, b, ...]}, {uniform: [low, high]}, "
                             "{loguniform: [low, high]}")
        low_high = self.uniform or self.loguniform
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"range {list(low_high)} needs low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform {list(self.loguniform)} needs low > 0")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in ("choice", "uniform", "loguniform") if getattr(self, name) is not None)

    def representatives(self) -> list:
        """The values to check before the sweep: every choice, or both ends of the range."""
        return list(self.choice) if self.choice is not None else list(self.uniform or self.loguniform)


class AshaConfig(_Section):
    """Asynchronous successive halving: stop trials below the 1/reduction_factor best at each rung."""

    enabled: bool = True
    # Epochs every trial gets before it can be stopped; rungs follow at grace x factor^k epochs.
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class TrialResources(_Section):
    """A trial is one Ray Train run: workers_per_trial workers of cpus_per_worker each, in Ray
    Train's own placement group. The trial function holds no CPU; Ray Data's tasks use the CPUs
    that all concurrent trials together leave free (the base config's scaling.cpus_for_data)."""

    workers_per_trial: int = Field(1, ge=1, le=4096)
    cpus_per_worker: float = Field(0.5, gt=0)
    # Ray Data splits the free CPUs between the datasets that run at once in whole CPUs, so on a
    # 2-core machine two trials' datasets would each get none: keep 1 there.
    max_concurrent_trials: int = Field(1, ge=1, le=1024)
    # Restarts of a trial whose driver function failed (Ray Train restarts workers on its own).
    max_failures: int = Field(0, ge=0, le=100)


class CrossValidation(_Section):
    """K-fold cross-validation for small datasets: each trial's configuration is trained K times on
    stratified folds of the train and validation splits together, and scored by the mean of the
    held-out folds' validation metric (see medray.tune.folds). The folds are drawn by the sweep's seed."""

    # None: off (ranked on the dataset's own validation split); K >= 2 folds otherwise.
    folds: int | None = Field(None, ge=2, le=100)


class SweepConfig(_Section):
    name: str = Field("sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    base: Path
    set: dict[str, Any] = {}
    space: dict[str, Domain] = Field(min_length=1)
    search: Literal["grid", "random", "optuna"] = "random"
    # Trials for random and optuna (default 8); for grid, how often the whole grid runs (default 1).
    num_samples: int | None = Field(None, ge=1, le=100_000)
    # What ranks the trials, stops them early (ASHA, train.early_stopping_patience) and picks each
    # trial's exported epoch: a validation metric only. The test split is read once, for the winner.
    metric: Metric = "val_auc"
    seed: int = Field(0, ge=0, lt=2**32)
    asha: AshaConfig = AshaConfig()
    resources: TrialResources = TrialResources()
    cross_validation: CrossValidation = CrossValidation()

    @field_validator("metric", mode="before")
    @classmethod
    def _not_a_test_metric(cls, metric: Any) -> Any:
        if isinstance(metric, str) and "test" in metric.lower():
            raise ValueError("a test metric cannot choose a model: trials are ranked and stopped on the validation "
                             "split and only the winner is evaluated on the test split, once; use val_auc, "
                             "val_loss or val_accuracy")
        return metric

    @field_validator("space")
    @classmethod
    def _known_keys(cls, space: dict[str, Domain]) -> dict[str, Domain]:
        for key in space:
            check_run_config_key(key)
        return space

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> SweepConfig:
        if self.search == "grid":
            ranges = [key for key, domain in self.space.items() if domain.kind != "choice"]
            if ranges:
                raise ValueError(f"search=grid needs a choice list for every key; space.{ranges[0]} is a "
                                 f"{self.space[ranges[0]].kind} range (use search: random or optuna)")
        return self

    @property
    def samples(self) -> int:
        return self.num_samples or (1 if self.search == "grid" else 8)

    @property
    def folds(self) -> int | None:
        """K of K-fold cross-validation, or None when trials are scored on the validation split."""
        return self.cross_validation.folds

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min" if self.metric == "val_loss" else "max"


def check_run_config_key(key: str) -> None:
    """`key` must name a value (not a section) of the run config, e.g. train.lr."""
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f"; did you mean {'.'.join([*parts[:depth], close[0]])}?" if close else ""
            raise ValueError(f"unknown key {key}: the run config has no {'.'.join(parts[:depth + 1])}{hint}")
        annotation = fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth < len(parts) - 1:
            if not is_section:
                raise ValueError(f"unknown key {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            model = annotation
        elif is_section:
            raise ValueError(f"key {key} is a section; search one of its values, e.g. {key}."
                             f"{next(iter(annotation.model_fields))}")


def load_sweep(path: str | Path, overrides: list[str] = ()) -> tuple[SweepConfig, RunConfig]:
    """Read and check a sweep file and its base run config; raise MedrayError naming the bad key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file", "pass --config with a sweep YAML, e.g. configs/demo_sweep.yaml")
    for override in overrides:
        apply_override(raw, override)
    sweep = parse_sweep(raw, source=str(path))
    base_path = sweep.base if sweep.base.is_absolute() else path.parent / sweep.base
    base_raw = read_yaml_mapping(base_path, f"{path}: base config",
                                 f"set base to a run config relative to the sweep file (base={sweep.base})")
    base = resolve_base(base_raw, sweep, source=str(base_path))
    check_space(sweep, base, source=str(path))
    return sweep.model_copy(update={"base": base_path.resolve()}), base


def parse_sweep(raw: dict, source: str) -> SweepConfig:
    if "top_k" in raw:
        raise MedrayError(f"{source}: top_k: a sweep evaluates only its winner (chosen on the validation split) on "
                          "the test split, once, so that no test score takes part in the choice; remove top_k")
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            message = item["msg"].removeprefix("Value error, ")
            key = ".".join(str(part) for part in item["loc"])
            if item["type"] == "extra_forbidden":
                lines.append(f"unknown key {key}{_sweep_key_hint(item['loc'])}")
            elif item["type"] == "missing":
                lines.append(f"missing key {key}")
            elif message.startswith(("unknown key", "key ", "search=grid")):
                lines.append(f"space: {message}" if item["loc"][:1] == ("space",) else message)
            else:
                lines.append(f"{key}={item.get('input')!r} is not allowed: {message}")
        raise MedrayError(f"{source}: " + "; ".join(dict.fromkeys(lines))) from None


def _sweep_key_hint(loc: tuple) -> str:
    models = {(): SweepConfig, ("asha",): AshaConfig, ("resources",): TrialResources,
              ("cross_validation",): CrossValidation}
    model = models.get(tuple(loc[:-1]))
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" ({'did you mean ' + close[0] + '? ' if close else ''}allowed: {', '.join(model.model_fields)})"


def resolve_base(base_raw: dict, sweep: SweepConfig, source: str) -> RunConfig:
    """The base run config with the sweep's `set` and trial resources applied, paths made absolute.

    Paths become absolute because trials run in Ray actors whose working directory is not ours.
    """
    raw = deep_merge(copy.deepcopy(base_raw), sweep.set)
    raw.setdefault("scaling", {}).update(num_workers=sweep.resources.workers_per_trial,
                                         cpus_per_worker=sweep.resources.cpus_per_worker)
    # The checkpoint each trial keeps is chosen by the metric the sweep ranks by.
    raw.setdefault("train", {})["monitor"] = sweep.metric
    base = validate_config(raw, source=f"{source} (with the sweep's set and resources)")
    path = base.data.path
    resolved = [storage.normalise(item) for item in path] if isinstance(path, list) else storage.normalise(path)
    updates = {"data": base.data.model_copy(update={"path": resolved})}
    if base.model.weights not in ("none", "imagenet"):
        updates["model"] = base.model.model_copy(update={"weights": str(Path(base.model.weights).resolve())})
    return base.model_copy(update=updates)


def deep_merge(tree: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            deep_merge(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)
    return tree


def check_space(sweep: SweepConfig, base: RunConfig, source: str) -> None:
    """Every value the space can produce must make a valid run config with a known backbone."""
    from medray.models.registry import get_backbone

    for key, domain in sweep.space.items():
        for value in domain.representatives():
            try:
                config = trial_config(base, {key: value}, source=f"{source}: space.{key}")
                get_backbone(config.model.backbone)
            except MedrayError as error:
                raise MedrayError(f"{source}: space.{key}: {value!r} gives an invalid trial: {error}") from None


def trial_config(base: RunConfig, params: dict[str, Any], source: str = "trial") -> RunConfig:
    """The base config with one trial's sampled values set at their dotted keys, validated."""
    raw = base.model_dump(mode="json")
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate_config(raw, source=source)


def epoch_budget(sweep: SweepConfig, base: RunConfig) -> int:
    """The most epochs any trial can train (both phases), for ASHA's rungs."""
    def largest(key: str, default: int) -> int:
        domain = sweep.space.get(key)
        return int(max(domain.representatives())) if domain is not None else default
    return largest("train.epochs", base.train.epochs) + largest("train.fine_tune.epochs", base.train.fine_tune.epochs)
