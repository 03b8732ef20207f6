"""`medray` on the command line: parse, load the config, call one library function.

Every mistake a user can make ends here as one line, `medray: error: ...`, and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from medray import console
from medray.data.sources import source_kind_names
from medray.errors import MedrayError, user_error


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.command(args)
    except KeyboardInterrupt:
        print("medray: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (a user error may arrive wrapped by Ray)
        found = user_error(error)
        if found is None:
            raise
        print(f"medray: error: {found}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medray", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train, evaluate and explain one model as a Ray job")
    add_config_arguments(run)
    run.set_defaults(command=command_run)

    explain = commands.add_parser("explain", help="CAM maps, galleries and checks for a finished run's test split, "
                                                   "or for a Keras model trained elsewhere (--model)")
    add_config_arguments(explain)
    explain.add_argument("--run", dest="run_dir",
                         help="the run's folder (holds model.keras), e.g. results/demo-20261123-053822; with "
                              "--model, only where the class names come from")
    explain.add_argument("--model", help="a Keras classifier (.keras or .h5) to explain over data.path "
                                         "(same as explain.model)")
    explain.add_argument("--trust-model-code", action="store_true",
                         help="load a model holding Lambda layers, whose Python code runs on load: only "
                              "files from authors you trust (same as explain.trust_model_code)")
    explain.set_defaults(command=command_explain)

    tune = commands.add_parser("tune", help="search hyperparameters and backbones with Ray Tune, rank them")
    tune.add_argument("--config", help="sweep YAML (a base run config and a search space), "
                                       "e.g. configs/demo_sweep.yaml")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="override one sweep key, e.g. --set num_samples=4 or --set set.train.epochs=2")
    tune.add_argument("--resume", metavar="SWEEP", help="continue an interrupted sweep: its folder or its name "
                                                       "under results/; finished trials are not run again")
    add_verbose_argument(tune)
    tune.set_defaults(command=command_tune)

    submit = commands.add_parser("submit", help="`ray job submit --working-dir .` after checking the package size")
    submit.add_argument("--address", help="the job server, e.g. http://head:8265 (default: RAY_ADDRESS)")
    submit.add_argument("--runtime-env-json", help="passed to ray job submit, e.g. the storage env_vars")
    submit.add_argument("job", nargs=argparse.REMAINDER, help="-- python jobs/run.py --config ...")
    submit.set_defaults(command=command_submit)

    resume = commands.add_parser("resume", help="continue a run whose driver was killed, from its checkpoints")
    resume.add_argument("run_dir", help="the run's folder, e.g. results/demo-20261123-053822")
    add_verbose_argument(resume)
    resume.set_defaults(command=command_resume)

    serve_parser = commands.add_parser("serve", help="a run's model (or a model file) as an HTTP endpoint on "
                                                     "Ray Serve: predictions and Grad-CAM maps")
    serve_parser.add_argument("model", metavar="RUN_OR_MODEL",
                              help="a finished run's folder (local or s3://...) or a .keras/.h5 file")
    serve_parser.add_argument("--config", help="Serve config YAML (args and deployment options), "
                                               "e.g. configs/serve.yaml; without it, the defaults")
    serve_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                              help="override one of the application's args, e.g. --set max_batch_size=32")
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1, or the config's)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (default 8000, or the config's)")
    serve_parser.add_argument("--trust-model-code", action="store_true",
                              help="load a model file holding Lambda layers (their code runs on load)")
    serve_parser.add_argument("--detach", action="store_true",
                              help="return once deployed, leaving the application on the cluster "
                                   "(`serve shutdown` ends it); otherwise serve until Ctrl-C")
    add_verbose_argument(serve_parser)
    serve_parser.set_defaults(command=command_serve)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(required=True, metavar="TOOL")
    synth = data.add_parser("synth", help="write the synthetic brain-MRI phantom dataset")
    synth.add_argument("--out", required=True, help="folder to write parquet/, folders/ and masks/ "
                                                    "(multi_label: parquet/ and npz/) into")
    synth.add_argument("--task", choices=["single_label", "multi_label"], default="single_label",
                       help="single_label: one class each (no lesion, bright or dark lesion); multi_label: "
                            "a bright and a dark lesion, each independently present or absent, a mask each")
    synth.add_argument("--train", type=int, default=1200)
    synth.add_argument("--val", type=int, default=240)
    synth.add_argument("--test", type=int, default=360)
    synth.add_argument("--size", type=int, default=64, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--volumes", action="store_true",
                       help="3-D head-volume phantoms (--size voxels a side, 16-128) as MedMNIST-3D's .npz "
                            "with lesion masks, in npz/volumes.npz (data.source: npz_volumes)")
    synth.add_argument("--second-scanner", metavar="CLASS",
                       help="plant an acquisition shortcut: every image of CLASS from a second scanner "
                            "(another intensity window, more noise), for `medray data inspect` to find")
    synth.set_defaults(command=command_synth)
    inspect = data.add_parser("inspect", help="quality report: class balance, sizes, bad files, duplicates, "
                                              "train/test leakage, outliers")
    inspect.add_argument("data_path", nargs="?", metavar="PATH",
                         help="a dataset to inspect without a config: a parquet file or folder, an .npz, "
                              "or a folder of class folders of images (PNG, JPEG, DICOM)")
    inspect.add_argument("--config", help="run config YAML whose data section to inspect")
    inspect.add_argument("--path", help="the same as PATH")
    inspect.add_argument("--source", choices=source_kind_names(),
                         help="what PATH holds (default: guessed from what is there)")
    inspect.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                         help="override one config key, e.g. --set data.class_names=[normal,pneumonia]")
    inspect.add_argument("--out", help="folder for inspect.json / inspect.png (default <output.dir>/inspect-<name>)")
    add_verbose_argument(inspect)
    inspect.add_argument("--dedupe", action="store_true",
                         help="also write manifest.parquet without duplicates and leaked train rows")
    inspect.set_defaults(command=command_inspect)

    report = commands.add_parser("report", help="rebuild report.html of a run or sweep folder")
    report.add_argument("results_dir", help="a run folder (results/<run-id>) or a sweep folder")
    report.add_argument("--examples-per-class", type=int, default=16,
                        help="misclassified images shown per true class, most confident first")
    report.set_defaults(command=command_report)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML, e.g. configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one config key, e.g. --set train.lr=3e-4 (repeatable)")
    add_verbose_argument(parser)


@contextlib.contextmanager
def ray_session():
    """Leave the Ray connection a command opened before its quiet section ends: Ray prints worker
    output seconds late (and flushes its deduplicated lines when it disconnects), and those lines
    belong in the run's log, not below the summary. A connection that was there before the command
    (a test session's cluster) is left alone."""
    import ray

    connected_before = ray.is_initialized()
    try:
        yield
    finally:
        if not connected_before and ray.is_initialized():
            ray.shutdown()


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show what Ray and TensorFlow say (always in <run>/logs/ray.log)")


def command_run(args: argparse.Namespace) -> None:
    with console.quiet(args.verbose), ray_session():  # before the imports: TensorFlow speaks as it loads
        from medray.config import load_config
        from medray.run import run_job

        outcome = run_job(load_config(args.config, args.overrides))
    print((outcome.run_dir / "summary.txt").read_text(), end="")


def command_tune(args: argparse.Namespace) -> None:
    if (args.config is None) == (args.resume is None):
        raise MedrayError("medray tune needs either --config <sweep YAML> or --resume <sweep folder or name>")
    with console.quiet(args.verbose), ray_session():
        from medray.tune.space import load_sweep
        from medray.tune.sweep import resume_sweep, run_sweep, summarise

        if args.resume is not None:
            outcome = resume_sweep(args.resume)
        else:
            outcome = run_sweep(*load_sweep(args.config, args.overrides))
    print(summarise(outcome), end="")


def command_resume(args: argparse.Namespace) -> None:
    from pathlib import Path

    config_path = Path(args.run_dir) / "config.yaml"
    if not config_path.is_file():
        raise MedrayError(f"{args.run_dir} holds no config.yaml; pass the folder of a run medray started")
    with console.quiet(args.verbose), ray_session():
        from medray.config import load_config
        from medray.run import run_job

        outcome = run_job(load_config(config_path))
    print((outcome.run_dir / "summary.txt").read_text(), end="")


def command_submit(args: argparse.Namespace) -> None:
    from medray.submit import submit_job

    job = args.job[1:] if args.job[:1] == ["--"] else args.job
    code = submit_job(args.address, job, runtime_env_json=args.runtime_env_json)
    if code:
        raise SystemExit(code)


def command_explain(args: argparse.Namespace) -> None:
    with console.quiet(args.verbose), ray_session():
        from medray.config import load_config
        from medray.explain.job import explain_run

        overrides = [*args.overrides, *(["explain.trust_model_code=true"] if args.trust_model_code else [])]
        config = load_config(args.config, overrides)
        if args.model or config.explain.model:
            from medray.explain.model_job import explain_model

            out_dir = explain_model(config, args.model, args.run_dir).out_dir
        elif args.run_dir is None:
            raise MedrayError("medray explain needs --run <run folder> or --model <.keras or .h5 file>")
        else:
            out_dir = explain_run(config, args.run_dir).maps_dir.parent
    print((out_dir / "summary.txt").read_text(), end="")


def command_serve(args: argparse.Namespace) -> None:
    import time

    overrides = [*args.overrides, *(["trust_model_code=true"] if args.trust_model_code else [])]
    with console.quiet(args.verbose):
        from medray.serve.launch import start_server

        started = start_server(args.model, args.config, overrides, args.host, args.port,
                               announce=lambda token: console.say(f"token     {token}  (clients send 'Authorization: "
                                                            f"Bearer <token>'; set MEDRAY_SERVE_TOKEN to choose it)"))
    print(f"serving   {args.model}\nendpoint  {started.url}/predict  (GET {started.url}/info, /healthz)", flush=True)
    if args.detach:
        return
    import ray
    from ray import serve

    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


def command_synth(args: argparse.Namespace) -> None:
    from medray.data.synth import write_demo_dataset, write_multilabel_dataset

    multi_label = args.task == "multi_label"
    if args.volumes:
        return command_synth_volumes(args)
    # Every class, or every combination of findings (none, either alone, both), in every split.
    smallest, what = (4, "one per combination of findings") if multi_label else (3, "one per class")
    for name in ("train", "val", "test"):
        if getattr(args, name) < smallest:
            raise MedrayError(f"--{name}={getattr(args, name)}: each split needs at least {smallest} images ({what})")
    if not 28 <= args.size <= 256:
        raise MedrayError(f"--size={args.size}: phantoms are drawn at 28 to 256 pixels")
    sizes = dict(train=args.train, val=args.val, test=args.test, size=args.size, seed=args.seed)
    if multi_label:
        if args.second_scanner is not None:
            raise MedrayError("--second-scanner: only the single-label phantoms plant a second scanner; "
                              "drop it or use --task single_label")
        summary = write_multilabel_dataset(args.out, **sizes)
    else:
        summary = write_demo_dataset(args.out, **sizes, second_scanner=args.second_scanner)
    for split, counts in summary["counts"].items():
        print(f"{split:<6} " + ", ".join(f"{name} {count}" for name, count in counts.items()))
        if multi_label:
            print(" " * 7 + ", ".join(f"{name} {count}" for name, count in summary["combinations"][split].items()))
    print(f"wrote {summary['path']}")


def command_synth_volumes(args: argparse.Namespace) -> None:
    from medray.data.synth_volumes import write_volume_dataset

    if args.task != "single_label" or args.second_scanner is not None:
        raise MedrayError("--volumes: the volume phantoms are single-label without a second scanner; "
                          "drop --task and --second-scanner")
    for name in ("train", "val", "test"):
        if getattr(args, name) < 3:
            raise MedrayError(f"--{name}={getattr(args, name)}: each split needs at least 3 volumes (one per class)")
    summary = write_volume_dataset(args.out, train=args.train, val=args.val, test=args.test, size=args.size,
                                   seed=args.seed)
    for split, counts in summary["counts"].items():
        print(f"{split:<6} " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    print(f"wrote {summary['npz']}")


def command_inspect(args: argparse.Namespace) -> None:
    from pathlib import Path

    from medray.config import apply_override, load_config, validate_config
    from medray.data.inspect import default_out_dir, format_inspection, inspect_data
    from medray.data.sources import guess_kind

    if args.data_path and args.path and args.data_path != args.path:
        raise MedrayError(f"medray data inspect: two paths ({args.data_path}, --path {args.path}); pass one")
    path = args.data_path or args.path
    if bool(args.config) == bool(path):
        raise MedrayError("medray data inspect: pass either a dataset PATH or --config FILE")
    if args.config:
        config = load_config(args.config, args.overrides)
    else:
        raw = {"data": {"path": path, "source": args.source or guess_kind(Path(path))}}
        for override in args.overrides:
            apply_override(raw, override)
        config = validate_config(raw, source="--path")
    out_dir = Path(args.out) if args.out else default_out_dir(config)
    with console.quiet(args.verbose), ray_session():
        log = console.keep_log_in(out_dir / "logs")
        report = inspect_data(config, out_dir, dedupe=args.dedupe)
    report["written"] = [*report.get("written", []), str(log)]
    print(format_inspection(report))


def command_report(args: argparse.Namespace) -> None:
    from medray.report import build_report

    if args.examples_per_class < 0:
        raise MedrayError(f"--examples-per-class={args.examples_per_class}: give 0 or more images per class")
    if is_sweep_dir(args.results_dir):  # the leaderboard is rebuilt from the trial folders first
        from medray.tune.leaderboard import write_leaderboard

        write_leaderboard(args.results_dir)
    print(build_report(args.results_dir, examples_per_class=args.examples_per_class))


def is_sweep_dir(path: str) -> bool:
    from pathlib import Path

    return (Path(path) / "sweep.yaml").is_file()


if __name__ == "__main__":
    sys.exit(main())
