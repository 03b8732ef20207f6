"""The bulk explain job's shape on a cluster: decoding in CPU tasks, CAM in an actor pool whose
actors request `explain.gpus_per_actor` GPUs, overlay encoding in CPU tasks again. This machine has
no GPU, so the plan is checked, not the speed: Ray Data's logical plan (resource requests) and
physical plan (operator layout)."""

import ray

from medray.task import SingleLabelTask
from medray.config import load_config
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.explain.bulk import cam_dataset

from conftest import DEMO_CONFIG
from test_explain_bulk import fake_run


def explain_inputs(tiny_dataset, *overrides):
    config = load_config(DEMO_CONFIG, [f"data.path={tiny_dataset / 'parquet'}", "model.input_size=32", *overrides])
    source = discover(config.data)
    return config, source, read_split(source, "test", 32, config.data)


def logical_operators(dataset: ray.data.Dataset) -> dict:
    # Ray Data keeps each map's remote args and compute strategy on its logical operator (a dataclass).
    return {op.name: op for op in dataset._logical_plan.dag.post_order_iter()}


def test_cam_actors_request_the_configured_gpus_and_decoding_stays_in_cpu_tasks(tiny_dataset, ray_cluster, capsys):
    config, source, decoded = explain_inputs(tiny_dataset, "explain.gpus_per_actor=0.5", "explain.concurrency=3")
    mapped = cam_dataset(decoded, b"never loaded: nothing runs", "baseline_cnn", SingleLabelTask(tuple(source.class_names)),
                         config.explain)
    operators = logical_operators(mapped)
    cam = operators["MapBatches(CamActor)"]
    assert cam.ray_remote_args["num_gpus"] == 0.5
    assert isinstance(cam.compute, ray.data.ActorPoolStrategy)
    assert cam.compute.min_size == cam.compute.max_size == 3
    decode = next(op for name, op in operators.items() if "read_pieces" in name)
    assert not decode.ray_remote_args.get("num_gpus")
    assert not isinstance(decode.compute, ray.data.ActorPoolStrategy)

    mapped.explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[1].splitlines()
    cam_line = next(line for line in physical if "CamActor" in line)
    decode_line = next(line for line in physical if "read_pieces" in line)
    # two operators, not fused: the actors' GPUs are not spent on decoding
    assert "ActorPoolMapOperator[MapBatches(CamActor)]" in cam_line and "read_pieces" not in cam_line
    assert decode_line.lstrip("+- ").startswith("TaskPoolMapOperator[")
    # overlays are encoded after the actors, in CPU tasks of their own
    overlay_line = next(line for line in physical if "encode_overlay_table" in line)
    assert overlay_line.lstrip("+- ").startswith("TaskPoolMapOperator[") and "CamActor" not in overlay_line
    assert not operators["MapBatches(encode_overlay_table)"].ray_remote_args.get("num_gpus")
    # The driver reads one block of maps at a time; Ray Data's downstream-capacity backpressure
    # would pause the actors between batches (jobs/benchmarks/README.md: 310-360 against 510-540
    # maps/s), so this pipeline runs without it.
    assert mapped.context.downstream_capacity_backpressure_ratio is None


def test_on_cpus_the_same_layout_runs_and_its_stats_show_both_operators(tiny_dataset, tmp_path, ray_cluster):
    config, source, decoded = explain_inputs(tiny_dataset, "explain.overlays=false", "explain.checks=false")
    run_dir = fake_run(tmp_path / "run")
    mapped = cam_dataset(decoded, (run_dir / "model.keras").read_bytes(), "baseline_cnn", SingleLabelTask(tuple(source.class_names)),
                         config.explain)
    assert sum(block.num_rows for block in mapped.iter_batches(batch_size=None, batch_format="pyarrow")) == 24
    stats = mapped.stats()
    assert "MapBatches(CamActor)" in stats and "read_pieces" in stats
    assert not any("read_pieces" in line and "CamActor" in line for line in stats.splitlines())
