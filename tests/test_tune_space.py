"""The sweep file is checked before Ray starts: every mistake names its key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from medray.cli import main
from medray.config import RunConfig
from medray.errors import MedrayError
from medray.tune.space import load_sweep, trial_config

from conftest import DEMO_CONFIG


def write_sweep(tmp_path: Path, **changes) -> Path:
    sweep = {"name": "t", "base": str(DEMO_CONFIG), "search": "random", "num_samples": 2,
             "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.backbone": {"choice": ["baseline_cnn"]}}}
    sweep.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_valid_sweep_resolves_its_base_with_the_trial_resources(tmp_path):
    sweep, base = load_sweep(write_sweep(tmp_path, resources={"workers_per_trial": 1, "cpus_per_worker": 0.5}))
    assert sweep.samples == 2 and sweep.mode == "max"
    assert base.scaling.num_workers == 1 and base.train.monitor == "val_auc"
    assert os.path.isabs(base.data.path)


@pytest.mark.parametrize("space, named", [
    ({"model.backbone": {"choice": ["resnet_nope"]}}, r"space\.model\.backbone.*resnet_nope"),
    ({"train.lr": {"loguniform": [-0.1, 0.01]}}, r"space\.train\.lr.*low > 0"),
    ({"train.lr": {"choice": [-0.1]}}, r"space\.train\.lr.*train\.lr=-0\.1"),
    ({"model.dropout": {"choice": []}}, r"space\.model\.dropout\.choice.*at least 1"),
    ({"model.dropuot": {"uniform": [0.1, 0.5]}}, r"unknown key model\.dropuot.*did you mean model\.dropout"),
    ({"train": {"choice": [1]}}, r"key train is a section"),
    ({"train.lr": {"between": [1, 2]}}, r"space\.train\.lr"),
])
def test_an_invalid_space_is_rejected_before_ray_starts_naming_the_key(tmp_path, space, named, monkeypatch, capsys):
    import ray

    def must_not_start(*args, **kwargs):
        raise AssertionError("Ray was started for an invalid sweep")

    monkeypatch.setattr(ray, "init", must_not_start)
    with pytest.raises(MedrayError, match=named):
        load_sweep(write_sweep(tmp_path, space=space))
    assert main(["tune", "--config", str(write_sweep(tmp_path, space=space))]) == 2
    assert re.search(named, capsys.readouterr().err)


def test_unknown_sweep_keys_and_grid_over_ranges_are_named(tmp_path):
    with pytest.raises(MedrayError, match=r"unknown key searh \(did you mean search\?"):
        load_sweep(write_sweep(tmp_path, searh="grid"))
    with pytest.raises(MedrayError, match=r"search=grid needs a choice list.*space\.train\.lr"):
        load_sweep(write_sweep(tmp_path, search="grid"))


def test_every_sampled_trial_config_is_a_valid_run_config(tmp_path):
    from ray import tune

    sweep, base = load_sweep(write_sweep(tmp_path, space={
        "train.lr": {"loguniform": [1e-4, 1e-2]}, "model.dropout": {"uniform": [0.0, 0.6]},
        "train.batch_size": {"choice": [8, 16]}, "data.augment.strength": {"choice": [0.0, 1.0, 2.0]},
        "train.class_balance": {"choice": ["none", "weights", "oversample"]}}))
    from medray.tune.sweep import tune_domain

    domains = {key: tune_domain(domain, sweep.search) for key, domain in sweep.space.items()}
    for seed in range(20):
        sampled = {key: domain.sample(random_state=seed) for key, domain in domains.items()}
        config = trial_config(base, sampled)
        assert isinstance(config, RunConfig) and config.train.lr == sampled["train.lr"]
    assert isinstance(domains["train.batch_size"], tune.search.sample.Categorical)


@pytest.mark.parametrize("search, searcher_name", [("grid", "BasicVariantGenerator"), ("random", "BasicVariantGenerator"),
                                                   ("optuna", "OptunaSearch")])
def test_each_search_gets_its_searcher_limited_to_the_concurrent_trials(tmp_path, search, searcher_name):
    from medray.tune.sweep import searcher

    space = {"train.lr": {"choice": [1e-3, 3e-3]}} if search == "grid" else None
    sweep, _ = load_sweep(write_sweep(tmp_path, search=search, **({"space": space} if space else {})))
    chosen = searcher(sweep)
    inner = getattr(chosen, "searcher", chosen)  # Optuna sits inside a ConcurrencyLimiter
    assert type(inner).__name__ == searcher_name
    assert getattr(chosen, "max_concurrent", None) == sweep.resources.max_concurrent_trials


def test_a_grid_runs_each_point_once_per_pass_in_a_seeded_random_order(tmp_path):
    from medray.tune.sweep import grid_order, planned_trials

    lrs, dropouts = [1e-4, 3e-4, 1e-3, 3e-3], [0.2, 0.3, 0.4, 0.5]
    space = {"train.lr": {"choice": lrs}, "model.dropout": {"choice": dropouts}}
    sweep, _ = load_sweep(write_sweep(tmp_path, search="grid", num_samples=2, space=space))
    order = grid_order(sweep)
    product = sorted((lr, dropout) for lr in lrs for dropout in dropouts)
    assert len(order) == planned_trials(sweep) == 32
    for one_pass in (order[:16], order[16:]):
        assert sorted((point["train.lr"], point["model.dropout"]) for point in one_pass) == product
    # Not Tune's blocks of one learning rate: the first trials (those ASHA lets through) span the space.
    assert len({point["train.lr"] for point in order[:4]}) > 1 and order[:16] != order[16:]
    assert grid_order(sweep) == order
    assert grid_order(sweep.model_copy(update={"seed": 1})) != order
    random_search, _ = load_sweep(write_sweep(tmp_path, search="random"))
    assert grid_order(random_search) is None


def test_the_loss_and_its_parameters_are_searchable(tmp_path):
    space = {"train.loss": {"choice": ["cross_entropy", "focal", "ohem"]}, "train.focal_gamma": {"uniform": [0.5, 3.0]},
             "train.ohem_fraction": {"choice": [0.25, 0.5, 1.0]}}
    sweep, base = load_sweep(write_sweep(tmp_path, space=space))
    trial = trial_config(base, {"train.loss": "ohem", "train.focal_gamma": 1.5, "train.ohem_fraction": 0.25})
    assert (trial.train.loss, trial.train.ohem_fraction) == ("ohem", 0.25)
    with pytest.raises(MedrayError, match=r"space\.train\.ohem_fraction: 1\.5 gives an invalid trial"):
        load_sweep(write_sweep(tmp_path, space={"train.ohem_fraction": {"choice": [0.5, 1.5]}}))


@pytest.mark.parametrize("metric", ["test_auc", "test_accuracy"])
def test_a_test_metric_as_the_objective_is_refused_in_one_line_before_ray_starts(tmp_path, metric, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray was started for a refused sweep"))
    with pytest.raises(MedrayError, match=rf"metric='{metric}' is not allowed: a test metric cannot choose a "
                                          r"model: .*validation split.*use val_auc") as error:
        load_sweep(write_sweep(tmp_path, metric=metric))
    assert "\n" not in str(error.value)
    assert main(["tune", "--config", str(write_sweep(tmp_path, metric=metric))]) == 2
    assert "test metric cannot choose a model" in capsys.readouterr().err


def test_top_k_is_refused_because_only_the_winner_is_tested(tmp_path):
    with pytest.raises(MedrayError, match=r"top_k: a sweep evaluates only its winner .* remove top_k"):
        load_sweep(write_sweep(tmp_path, top_k=3))
