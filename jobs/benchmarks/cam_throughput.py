"""CAM throughput: medray's bulk explain job against what a user could write without it: the seed
notebooks' per-image recipe, the same recipe with the gradient model built once, and, as the limit,
the best batched rate measured in this process; and (--memory) the driver's peak memory as the test
set grows from 2,000 to 20,000 images.

    python jobs/benchmarks/cam_throughput.py                       # the README's run: a few minutes
    python jobs/benchmarks/cam_throughput.py --images 20000 --backbones baseline_cnn mobilenet_v2 \
        nested_mobilenet_v2 --memory                               # everything (tens of minutes)

Every figure is measured in this run and printed, as a rate (maps/s) and as a ratio; nothing is
asserted; compare only within one run. Per backbone: a model trained briefly on phantoms (the speed
of a map does not depend on how well the model learned), --images test phantoms written as Hugging
Face-style parquet, then the references, in this process, on the decoded images:
  notebook  the notebook recipe (keras-io make_gradcam_heatmap, as the seeds run it): a new gradient
            keras.Model and one eager GradientTape per image, on --loop-images of them (its rate
            per image does not change with the count)
  once      the same per-image recipe with the gradient model built once, the one-line fix
  compiled  a plain tf.function of the batched forward + backward pass (activations and their
            gradients for a batch of --batch images, nothing else: no weighting, normalising,
            reading or writing)
  explainer medray's CamExplainer on the same batches (the whole Grad-CAM, no Ray)
  limit     the faster of `compiled` and `explainer`: the best in-process batched rate
and medray's explain_split end to end, start-up included, one actor:
  defaults  what a user gets (ExplainConfig() with --batch): the checks (localisation on every
            image, deletion/insertion and the sanity checks on the default 256-image sample),
            overlay PNGs and the galleries (16 per group)
  no PNGs   the same with overlays off (and so no galleries)
Ray Data reads and decodes the parquet, an actor pool maps batches, the driver writes the maps
parquet. "steady" leaves out the actor's start-up and the sample's checks by timing from the first
written shard to the last. On this shared 2-core machine the references have both cores to
themselves while the job shares them between decoding, the actor and the driver.
The row nested_mobilenet_v2 is a user's model (`medray explain --model`): MobileNetV2 nested as one
layer of a Functional model, saved as .h5; its CAM layer is found in the graph. The per-image
recipes and the compiled pass read `model.get_layer(layer).output`, which a nested backbone does
not have (keras-io's disconnected graph), so its limit is the explainer's rate; the last line
compares its bulk rate with medray's own MobileNetV2 at the same size (goal: within 10 %).
The row cnn3d (--volumes) is the 3-D demo's model (conv_filters [16, 32, 64]) on 32^3 head-volume
phantoms read as data.source npz_volumes: the same references on the same decoded volumes (the
notebook recipe with its gradients averaged over three spatial axes instead of two) and the same
two bulk runs, whose overlays are the slice panels (one matplotlib figure per map) and whose maps
are also stored upsampled as one .npy per volume.

    python jobs/benchmarks/cam_throughput.py --backbones --volumes --images 64 --batch 16 --loop-images 16 \
        --check-sample 0                       # the sample's checks off: label randomisation retrains 3-D models
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medray.config import ExplainConfig, ModelConfig, validate_config
from medray.data.phantoms import make_phantoms
from medray.data.synth import write_demo_dataset
from medray.keras_setup import keras, tf
from medray.models.actor import UserModelSpec
from medray.models.classifier import build_classifier
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone

SIZES = {"baseline_cnn": 64, "mobilenet_v2": 128, "nested_mobilenet_v2": 128}
VOLUME_BACKBONE, VOLUME_SIDE = "cnn3d", 32
NESTED = "nested_mobilenet_v2"
BATCH = 64  # the default; --batch changes it for the throughput runs (the memory runs keep it)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="*", default=["baseline_cnn", "mobilenet_v2"], choices=list(SIZES),
                        help="none: only the memory runs")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="images per batch for the limit, the explainer and the bulk job")
    parser.add_argument("--loop-images", type=int, default=128,
                        help="images for each per-image recipe (at most --images)")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--memory", action="store_true", help="also the driver-memory runs (minutes each)")
    parser.add_argument("--memory-overlays", action="store_true",
                        help="write overlay PNGs in the memory runs too (about 50 images/s on 2 CPUs)")
    parser.add_argument("--check-sample", type=int, default=None,
                        help="explain.check_sample of the bulk runs (default: ExplainConfig's); 0 turns the sample's "
                             "checks off (on volumes label randomisation retrains the 3-D model: minutes)")
    parser.add_argument("--volumes", action="store_true",
                        help=f"add the 3-D row: {VOLUME_BACKBONE} on {VOLUME_SIDE}^3 volume phantoms (--images volumes)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--memory-child", nargs=3, metavar=("DATA", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(*map(Path, args.memory_child), args.memory_overlays)

    import ray

    from medray.cluster import connect

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cam-throughput-"))
    connect(validate_config({"data": {"path": str(work)}}).scaling)
    print(f"machine: {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Ray {ray.__version__}; work dir {work}")
    results = {}
    for name in args.backbones:
        results[name] = throughput(name, SIZES[name], args.images, min(args.loop_images, args.images), args.batch,
                                   work / name)
    if args.volumes:
        results[VOLUME_BACKBONE] = volume_throughput(args.images, min(args.loop_images, args.images), args.batch,
                                                     work / VOLUME_BACKBONE, args.check_sample)
    if results:
        print_table(results)
    if NESTED in results and "mobilenet_v2" in results:
        nested, own = results[NESTED], results["mobilenet_v2"]
        for setting in BULK_SETTINGS:
            bulk, steady = f"bulk {setting}", f"steady {setting}"
            print(f"{NESTED} (.h5) / mobilenet_v2, {setting}: bulk {nested[bulk] / own[bulk]:.2f}, "
                  f"steady {nested[steady] / own[steady]:.2f}  (goal: within 10 %)")
    if args.memory:
        memory(args.memory_sizes, work / "memory", args.memory_overlays)


BULK_SETTINGS = {"defaults": True, "no PNGs": False}  # the bulk rows: overlays (and galleries) on or off
REFERENCES = ("notebook", "once", "compiled", "explainer", "limit")


def print_table(results: dict) -> None:
    print("\nreferences, in this process (maps/s): notebook = a new gradient model per image, once = built "
          "once, compiled = plain tf.function forward + backward, limit = max(compiled, explainer)")
    print(f"{'backbone':<20} {'size':>5} " + " ".join(f"{name:>10}" for name in REFERENCES))
    for name, r in results.items():
        print(f"{name:<20} {size_label(name):>5} " + " ".join(f"{r[key]:>10.1f}" for key in REFERENCES))
    print("\nmedray's bulk job, one actor (maps/s, and its rate over each reference's)")
    print(f"{'backbone':<20} {'bulk run':<9} {'bulk':>7} {'steady':>7} {'/notebook':>10} {'/once':>7} "
          f"{'/limit':>7} {'steady/limit':>13}")
    for name, r in results.items():
        for setting in BULK_SETTINGS:
            bulk, steady = r[f"bulk {setting}"], r[f"steady {setting}"]
            print(f"{name:<20} {setting:<9} {bulk:>7.1f} {steady:>7.1f} {bulk / r['notebook']:>9.1f}x "
                  f"{bulk / r['once']:>6.1f}x {bulk / r['limit']:>6.2f}x {steady / r['limit']:>12.2f}x")


def size_label(name: str) -> str:
    return f"{VOLUME_SIDE}^3" if name == VOLUME_BACKBONE else str(SIZES[name])


def throughput(name: str, size: int, images: int, loop_images: int, batch: int, work: Path) -> dict:
    print(f"\n== {name} at {size}x{size}, {images} images, batch {batch} ==")
    backbone = get_backbone("mobilenet_v2" if name == NESTED else name)
    model = trained_model(backbone, size, nested=name == NESTED)
    model_path = work / ("model.h5" if name == NESTED else "model.keras")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(model_path))  # a str: tf-keras writes legacy HDF5 for a Path
    data = work / "data"
    write_demo_dataset(data, train=3, val=3, test=images, size=size, seed=1)
    test_file = next((data / "parquet").glob("test-*.parquet"))
    test_pixels = pq.read_table(test_file)
    # One batch per row group, so Ray Data streams the test set in blocks of one batch and the
    # steady rate can be timed from the first block written to the last.
    pq.write_table(test_pixels, test_file, row_group_size=batch)
    from medray.data.decode import decode_gray

    pixels = np.stack([decode_gray(item["bytes"], size, 10**8, where="bench")
                       for item in test_pixels.column("image").to_pylist()])
    inputs = to_model_input(pixels, backbone.model_input)
    layer = None if name == NESTED else backbone.cam_layers[0]
    reachable = name != NESTED
    nan = float("nan")
    result = {
        "notebook": rate(loop_images, lambda: per_image_loop(model, layer, inputs[:loop_images])) if reachable else nan,
        "once": rate(loop_images, lambda: per_image_loop_built_once(model, layer, inputs[:loop_images]))
        if reachable else nan,
        "compiled": batched_forward_backward(model, layer, inputs, batch) if reachable else nan,
        "explainer": explainer_rate(model, layer, inputs, batch),
    }
    result["limit"] = max(result["explainer"], result["compiled"]) if reachable else result["explainer"]
    run_as = UserModelSpec(".h5", backbone.model_input, None) if name == NESTED else name
    for setting, overlays in BULK_SETTINGS.items():
        result[f"bulk {setting}"], result[f"steady {setting}"] = bulk_job_rate(
            data / "parquet", model_path, run_as, size, batch, overlays, work / f"run-overlays-{overlays}")
    for key, value in result.items():
        print(f"  {key:<17} {value:8.1f} maps/s")
    return result


def volume_throughput(volumes: int, loop_volumes: int, batch: int, work: Path, check_sample: int | None) -> dict:
    """The 3-D row: every reference and both bulk runs for cnn3d on the same `volumes` test phantoms
    (32^3, written as the 3-D demo writes them and read back with data.source npz_volumes)."""
    from medray.data.phantoms3d import make_volume_phantoms
    from medray.data.synth_volumes import VOLUMES_FILE, write_volume_dataset

    print(f"\n== {VOLUME_BACKBONE} at {VOLUME_SIDE}^3, {volumes} volumes, batch {batch} ==")
    backbone, shape = get_backbone(VOLUME_BACKBONE), (VOLUME_SIDE,) * 3
    keras.utils.set_random_seed(0)
    training, _, labels = make_volume_phantoms(128, VOLUME_SIDE, seed=0)
    model = build_classifier(backbone, shape, 3, ModelConfig(backbone=VOLUME_BACKBONE, input_size=list(shape),
                                                             conv_filters=[16, 32, 64]))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    started = time.perf_counter()
    model.fit(to_model_input(training, backbone.model_input), labels, epochs=2, batch_size=16, verbose=0)
    print(f"  trained 2 epochs on 128 volume phantoms in {time.perf_counter() - started:.0f} s")
    model_path = work / "model.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(model_path))
    write_volume_dataset(work / "data", train=3, val=3, test=volumes, size=VOLUME_SIDE, seed=1)
    npz = work / "data" / VOLUMES_FILE
    with np.load(npz, allow_pickle=False) as arrays:
        inputs = to_model_input(arrays["test_images"], backbone.model_input)
    layer = backbone.cam_layers[0]
    result = {
        "notebook": rate(loop_volumes, lambda: per_image_loop(model, layer, inputs[:loop_volumes])),
        "once": rate(loop_volumes, lambda: per_image_loop_built_once(model, layer, inputs[:loop_volumes])),
        "compiled": batched_forward_backward(model, layer, inputs, batch),
        "explainer": explainer_rate(model, layer, inputs, batch),
    }
    result["limit"] = max(result["explainer"], result["compiled"])
    data = {"source": "npz_volumes", "path": str(npz)}
    for setting, overlays in BULK_SETTINGS.items():
        result[f"bulk {setting}"], result[f"steady {setting}"] = bulk_job_rate(
            npz, model_path, VOLUME_BACKBONE, list(shape), batch, overlays, work / f"run-overlays-{overlays}",
            data=data, check_sample=check_sample)
    for key, value in result.items():
        print(f"  {key:<17} {value:8.1f} maps/s")
    return result


def trained_model(backbone, size: int, nested: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    images, _, labels = make_phantoms(256, size, seed=0)
    model = (nested_classifier(size) if nested else
             build_classifier(backbone, size, 3, ModelConfig(backbone=backbone.name, weights="none")))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    started = time.perf_counter()
    model.fit(to_model_input(images, backbone.model_input), labels, epochs=2, batch_size=32, verbose=0)
    print(f"  trained 2 epochs on 256 phantoms in {time.perf_counter() - started:.0f} s")
    return model


def nested_classifier(size: int) -> keras.Model:
    """The transfer-learning recipe of the seed notebooks: the backbone as one layer, then a head."""
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    x = keras.layers.Dropout(0.3)(keras.layers.Dense(128, activation="relu")(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def rate(count: int, work) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def per_image_loop(model: keras.Model, layer: str, inputs: np.ndarray) -> list[np.ndarray]:
    """The seed notebooks (keras-io make_gradcam_heatmap): per image, a new gradient model and an
    eager GradientTape on the predicted class's probability."""
    heatmaps = []
    for image in inputs:
        grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
        with tf.GradientTape() as tape:
            conv_outputs, predictions = grad_model(image[np.newaxis])
            class_channel = predictions[:, tf.argmax(predictions[0])]
        grads = tape.gradient(class_channel, conv_outputs)
        pooled_grads = tf.reduce_mean(grads, axis=spatial_axes(grads))
        heatmap = tf.squeeze(conv_outputs[0] @ pooled_grads[..., tf.newaxis])
        heatmap = tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + 1e-12)
        heatmaps.append(heatmap.numpy())
    return heatmaps


def spatial_axes(grads) -> tuple[int, ...]:
    """The batch and spatial axes of a (1, H, W, C) or (1, D, H, W, C) gradient: keras-io's (0, 1, 2),
    and for a volume (0, 1, 2, 3)."""
    return tuple(range(len(grads.shape) - 1))


def per_image_loop_built_once(model: keras.Model, layer: str, inputs: np.ndarray) -> list[np.ndarray]:
    """The notebook recipe with its one-line fix: the gradient model built once, then the same
    eager GradientTape per image."""
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    heatmaps = []
    for image in inputs:
        with tf.GradientTape() as tape:
            conv_outputs, predictions = grad_model(image[np.newaxis])
            class_channel = predictions[:, tf.argmax(predictions[0])]
        grads = tape.gradient(class_channel, conv_outputs)
        pooled_grads = tf.reduce_mean(grads, axis=spatial_axes(grads))
        heatmap = tf.squeeze(conv_outputs[0] @ pooled_grads[..., tf.newaxis])
        heatmap = tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + 1e-12)
        heatmaps.append(heatmap.numpy())
    return heatmaps


def batched_forward_backward(model: keras.Model, layer: str, inputs: np.ndarray, batch: int) -> float:
    """Activations and their gradients for whole batches in one compiled call, as a user would
    write it with tf.function: no weighting, no normalisation, no data reading, no output."""
    features = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

    @tf.function(input_signature=[tf.TensorSpec((None, *inputs.shape[1:]), tf.float32)])
    def forward_backward(images):
        with tf.GradientTape() as tape:
            activations, probabilities = features(images, training=False)
            scores = tf.reduce_max(probabilities, axis=1)
        return activations, tape.gradient(scores, activations)

    forward_backward(inputs[:batch])  # trace once
    return rate(len(inputs), lambda: [forward_backward(inputs[start:start + batch])[1].numpy()
                                      for start in range(0, len(inputs), batch)])


def explainer_rate(model: keras.Model, layer: str, inputs: np.ndarray, batch: int) -> float:
    from medray.explain.cam import CamExplainer

    explainer = CamExplainer(model, layer, "gradcam")
    explainer(inputs[:batch])  # trace once
    return rate(len(inputs), lambda: [explainer(inputs[start:start + batch]) for start in range(0, len(inputs), batch)])


def explain_settings(overlays: bool, batch: int = BATCH, check_sample: int | None = None) -> ExplainConfig:
    """The defaults a user gets (Grad-CAM, checks on the default sample, one actor, galleries with
    the overlays), with the batch size, whether overlay PNGs are written and (if given) the sample."""
    return ExplainConfig(batch_size=batch, overlays=overlays,
                         **({} if check_sample is None else {"check_sample": check_sample}))


def bulk_job_rate(parquet: Path, model_path: Path, backbone: str | UserModelSpec, size: int | list[int], batch: int,
                  overlays: bool, out: Path, data: dict | None = None,
                  check_sample: int | None = None) -> tuple[float, float]:
    """(maps/s end to end, maps/s from the first written shard to the last); `data`: the data
    section when the test rows are not the parquet at `parquet` (the volumes' npz_volumes)."""
    from medray.explain.bulk import explain_split
    from medray.job import prepare_job

    config = validate_config({"data": data or {"path": str(parquet)},
                              "model": {"input_size": size, **({"backbone": backbone} if data else {})}})
    job = prepare_job(config)
    shutil.rmtree(out, ignore_errors=True)
    written = []
    started = time.perf_counter()
    outcome = explain_split(job.read_split("test"), model_path.read_bytes(), backbone,
                            job.task, explain_settings(overlays=overlays, batch=batch, check_sample=check_sample), out,
                            on_shard=lambda shard: written.append((time.perf_counter(), shard)),
                            read_rows=lambda row_ids: job.read_split("test", row_ids))
    total = time.perf_counter() - started
    first_time, first_shard = written[0]
    first_rows = pq.read_metadata(first_shard).num_rows
    steady = (outcome.rows - first_rows) / (written[-1][0] - first_time) if len(written) > 1 else float("nan")
    print(f"  overlays {'on ' if overlays else 'off'}: {total:.0f} s in all: {first_time - started:.0f} s to the first "
          f"shard (start-up), {written[-1][0] - first_time:.0f} s of shards, {total - (written[-1][0] - started):.0f} s "
          "after the last (the sample's checks, the scorecard)")
    return outcome.rows / total, steady


def memory(sizes: list[int], work: Path, overlays: bool) -> None:
    """Each size in a fresh driver process (same Ray cluster); peak RSS sampled during the job."""
    import ray

    print(f"\n== driver memory, baseline_cnn at 64x64, overlays {'on' if overlays else 'off'}, sizes {sizes} ==")
    size = SIZES["baseline_cnn"]
    model_path = work / "model.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    trained_model(get_backbone("baseline_cnn"), size).save(str(model_path))
    seed_data = work / "seed"
    write_demo_dataset(seed_data, train=3, val=3, test=256, size=size, seed=2)
    seed_test = pq.read_table(next((seed_data / "parquet").glob("test-*.parquet")))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    print(f"{'images':>8} {'RSS before job':>15} {'peak RSS in job':>16} {'growth':>8} "
          f"{'private growth':>15} {'job s':>7}   (private: RssAnon, without the object store's shared pages)")
    for count in sizes:
        data = work / f"data-{count}"
        for split in ("train", "val"):
            (data / "parquet").mkdir(parents=True, exist_ok=True)
            shutil.copy(next((seed_data / "parquet").glob(f"{split}-*.parquet")), data / "parquet")
        # the same 256 phantoms repeated: the driver's memory depends on how many rows, not on content
        tiled = pa.concat_tables([seed_test] * (-(-count // seed_test.num_rows))).slice(0, count)
        pq.write_table(tiled.replace_schema_metadata(seed_test.schema.metadata),
                       data / "parquet" / "test-00000-of-00001.parquet", row_group_size=256)
        child = subprocess.run([sys.executable, __file__, "--memory-child", str(data / "parquet"), str(model_path),
                                str(work / f"run-{count}"), *(["--memory-overlays"] if overlays else [])], env=env, capture_output=True, text=True, check=True)
        print(child.stdout.strip().splitlines()[-1])


def memory_child(parquet: Path, model_path: Path, out: Path, overlays: bool) -> None:
    from medray.explain.bulk import explain_split
    from medray.job import prepare_job

    config = validate_config({"data": {"path": str(parquet)}, "model": {"input_size": SIZES["baseline_cnn"]}})
    job = prepare_job(config).connect()
    before = rss_bytes()
    peak = dict(before)
    running = threading.Event()
    running.set()

    def sample():
        while running.is_set():
            for name, value in rss_bytes().items():
                peak[name] = max(peak[name], value)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    outcome = explain_split(job.read_split("test"), model_path.read_bytes(), "baseline_cnn", job.task,
                            explain_settings(overlays), out, read_rows=lambda row_ids: job.read_split("test", row_ids))
    elapsed = time.perf_counter() - started
    running.clear()
    sampler.join()
    mib = 2 ** 20
    total, private = "VmRSS", "RssAnon"
    print(f"{outcome.images:>8} {before[total] / mib:>11.0f} MiB {peak[total] / mib:>12.0f} MiB "
          f"{(peak[total] - before[total]) / mib:>4.0f} MiB {(peak[private] - before[private]) / mib:>11.0f} MiB "
          f"{elapsed:>7.0f}")


def rss_bytes() -> dict[str, int]:
    """The driver's resident memory (VmRSS) and its private part (RssAnon): VmRSS also counts the
    pages of Ray's shared-memory object store the driver has read blocks from, which belong to the
    store (bounded by its size), not to the driver."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                found[name] = int(value.split()[0]) * 1024
    return found


if __name__ == "__main__":
    main()
