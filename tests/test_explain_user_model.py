"""`medray explain --model`: a model trained elsewhere over images without labels, through the CLI
and the same actor pool as medray's own models; bad models stop before Ray in one line."""

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medray.cli import main
from medray.keras_setup import keras

from conftest import DEMO_CONFIG
from data_factory import image_bytes, scan, write
from test_dicom import write_dicom

CLASSES = ["normal", "tumour"]


def nested_sigmoid_model(path, lambda_layer=False):
    """The transfer-learning recipe at 16 px: a backbone as one layer, then a single sigmoid unit."""
    keras.utils.set_random_seed(0)
    backbone_inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(backbone_inputs)
    x = keras.layers.Activation("relu", name="features")(x)
    backbone = keras.Model(backbone_inputs, x, name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = backbone(inputs, training=False)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t + 1, name="shift")(x)
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)).save(path)
    return path


def explain_args(model, data_path, out, *extra):
    args = ["explain", "--config", str(DEMO_CONFIG), "--model", str(model)]
    for override in (f"data.path={data_path}", f"output.dir={out}", "output.run_id=mine", "model.input_size=null",
                     f"data.class_names=[{','.join(CLASSES)}]", "explain.batch_size=4", "explain.gallery_size=4",
                     "explain.deletion_steps=4", *extra):
        args += ["--set", override]
    return args


def test_a_folder_of_unlabelled_images_and_dicom_files_is_predicted_and_filed_by_class(tmp_path, ray_cluster, capsys):
    folder = tmp_path / "scans"
    for index in range(5):
        write(folder / f"scan{index}.png", image_bytes(scan(index, 20)))
    folder.joinpath("series").mkdir()
    write_dicom(folder / "series" / "IM0001", scan(9, 12).astype(np.uint16) * 8)  # DICOM without a suffix
    model = nested_sigmoid_model(tmp_path / "classifier.h5")
    args = explain_args(model, folder, tmp_path / "out", "data.source=folders", "explain.preprocess=symmetric")
    assert main(args) == 0
    out = tmp_path / "out" / "mine"
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert sorted(predictions["row_id"]) == ["scan0.png", "scan1.png", "scan2.png", "scan3.png", "scan4.png",
                                             "series/IM0001"]
    dicom_source = predictions.loc[predictions["row_id"] == "series/IM0001", "source"].item()
    assert dicom_source == str(folder / "series" / "IM0001")
    assert set(predictions["prediction_name"]) <= set(CLASSES) and predictions["label_name"].isna().all()
    assert np.allclose(np.stack(predictions["probabilities"]).sum(axis=1), 1, atol=1e-6)
    maps = pq.read_table(out / "explain" / "maps").to_pandas()
    assert set(maps["layer"]) == {"backbone/features"} and (maps["label"] == -1).all()
    for row in maps.itertuples():  # overlays filed under the predicted class
        assert row.overlay_file.startswith(f"gradcam/{CLASSES[row.prediction]}/")
        assert (out / "explain" / "overlays" / row.overlay_file).is_file()
    predicted = {CLASSES[index] for index in maps["prediction"]}
    assert sorted(path.name for path in (out / "explain" / "galleries").iterdir()) == sorted(
        f"{name}-predicted.png" for name in predicted)
    summary = capsys.readouterr().out
    assert "no accuracy figures: the images have no labels" in summary
    assert not (out / "metrics.json").exists()
    report = (out / "report.html").read_text()
    assert "No accuracy figures." in report and "backbone/features" in report and "-predicted" in report


def test_a_parquet_without_a_label_column_is_explained_row_by_row(tmp_path, ray_cluster):
    pq.write_table(pa.table({"image": [image_bytes(scan(index)) for index in range(3)]}), tmp_path / "test-new.parquet")
    model = nested_sigmoid_model(tmp_path / "classifier.keras")
    assert main(explain_args(model, tmp_path / "test-new.parquet", tmp_path / "out",
                             "explain.method=[gradcam,scorecam]", "explain.preprocess=mobilenet_v2",
                             "explain.target=all")) == 0
    predictions = pd.read_parquet(tmp_path / "out" / "mine" / "predictions.parquet")
    assert list(predictions["row_id"]) == ["test-new.parquet#0", "test-new.parquet#1", "test-new.parquet#2"]
    assert predictions["source"].str.endswith("test-new.parquet row 0").sum() == 1
    maps = pq.read_table(tmp_path / "out" / "mine" / "explain" / "maps").to_pandas()
    assert len(maps) == 3 * 2 * 2  # images x methods x both classes of the sigmoid head


@pytest.mark.parametrize("extra, message", [
    ((), r"classifier\.h5: layer 'shift' is a Lambda layer"),
    (("data.class_names=[a,b,c]",), r"classifier\.h5: the model predicts 2 classes but 3 class names"),
    (("model.input_size=64",), r"classifier\.h5: the model takes 16 px images but model.input_size=64"),
    (("explain.cam_layer=features",), r"no layer 'features'.*backbone/features"),
])
def test_a_bad_model_or_setting_is_one_line_before_ray(tmp_path, capsys, extra, message):
    model = nested_sigmoid_model(tmp_path / "classifier.h5", lambda_layer=not extra)
    (tmp_path / "scans").mkdir()
    write(tmp_path / "scans" / "a.png", image_bytes(scan(0)))
    assert main(explain_args(model, tmp_path / "scans", tmp_path / "out", "data.source=folders", *extra)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error)


def test_a_labelled_test_split_gets_metrics_and_the_run_report(tmp_path, tiny_dataset, ray_cluster):
    from medray.data.phantoms import CLASS_NAMES

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="features"),
                              keras.layers.GlobalMaxPooling2D(),
                              keras.layers.Dense(len(CLASS_NAMES), activation="softmax")])
    model.save(tmp_path / "three.keras", save_format="keras_v3")
    assert main(explain_args(tmp_path / "three.keras", tiny_dataset / "parquet", tmp_path / "out",
                             "data.class_names=null", "explain.preprocess=none")) == 0
    out = tmp_path / "out" / "mine"
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == 24 and set(predictions["label_name"]) <= set(CLASS_NAMES)
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    assert "no accuracy figures" not in (out / "summary.txt").read_text()


def test_an_unreadable_unlabelled_image_stops_the_job_in_one_line_or_is_skipped_and_counted(tmp_path, ray_cluster,
                                                                                              capsys):
    folder = tmp_path / "scans"
    write(folder / "good.png", image_bytes(scan(0)))
    write(folder / "broken.png", b"\x89PNG not really")
    model = nested_sigmoid_model(tmp_path / "classifier.h5")
    assert main(explain_args(model, folder, tmp_path / "out", "data.source=folders", "output.run_id=strict")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("medray: error: ") and "broken.png" in error and "data.on_bad_image: skip" in error
    assert main(explain_args(model, folder, tmp_path / "out", "data.source=folders", "data.on_bad_image=skip")) == 0
    assert "images left out as unreadable: 1" in capsys.readouterr().out
    assert list(pd.read_parquet(tmp_path / "out" / "mine" / "predictions.parquet")["row_id"]) == ["good.png"]


def test_a_cam_layer_that_is_one_branch_or_below_3_by_3_is_warned_about(tmp_path, ray_cluster, capfd):
    # Inception-like: the block's merged output is 1 x 1, so the last grid above 1 x 1 before the
    # pooling lies inside one branch ("branch" feeds "reduce"; the max-pooling branch bypasses it).
    inputs = keras.Input((16, 16, 3))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    branch = keras.layers.Conv2D(4, 1, name="branch")(stem)
    reduced = keras.layers.Conv2D(4, 16, name="reduce")(branch)
    pooled = keras.layers.MaxPooling2D(16, name="pool_branch")(stem)
    block = keras.layers.Concatenate(name="block")([reduced, pooled])
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(block))
    keras.Model(inputs, outputs).save(tmp_path / "inception.keras")
    (tmp_path / "scans").mkdir()
    write(tmp_path / "scans" / "a.png", image_bytes(scan(0)))
    assert main(explain_args(tmp_path / "inception.keras", tmp_path / "scans", tmp_path / "out", "data.source=folders",
                             "explain.checks=false", "explain.cam_layer=[branch,block]")) == 0
    console = capfd.readouterr().out
    warnings = json.loads((tmp_path / "out" / "mine" / "model.json").read_text())["cam_layer_warnings"]
    assert len(warnings) == 2
    assert re.search(r"CAM layer branch \(4 channels\) is one branch of a block.*block output .* is stem", warnings[0])
    assert re.search(r"CAM layer block is 1 x 1: too coarse", warnings[1])
    assert all(f"warning: {warning}" in console for warning in warnings)


def test_a_corrupt_exif_block_is_counted_not_printed_and_a_bad_image_points_to_the_manifest(tmp_path, ray_cluster,
                                                                                              capfd):
    import io
    import warnings

    from PIL import Image

    from medray.data.decode import decode_native

    buffer = io.BytesIO()  # a JPEG whose EXIF block ends where its first tag should begin
    Image.fromarray(scan(1, 16)).save(buffer, format="JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\x00\x00")
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        noted: list[str] = []
        decode_native(buffer.getvalue(), 10**6, "exif.jpg", warnings=noted)
    assert [str(warning.message) for warning in escaped] == []
    assert len(noted) == 1 and noted[0].startswith("EXIF orientation ignored: Corrupt EXIF data")

    folder = tmp_path / "scans"
    write(folder / "good.png", image_bytes(scan(0)))
    write(folder / "exif.jpg", buffer.getvalue())
    write(folder / "broken.png", b"\x89PNG not really")
    model = nested_sigmoid_model(tmp_path / "classifier.h5")
    assert main(explain_args(model, folder, tmp_path / "out", "data.source=folders", "output.run_id=strict")) == 2
    error = capfd.readouterr().err.strip().splitlines()[-1]
    assert "broken.png" in error and "data.json" not in error
    assert error.endswith(f"count them in {tmp_path / 'out' / 'strict' / 'manifest.parquet'}")
    assert main(explain_args(model, folder, tmp_path / "out", "data.source=folders", "data.on_bad_image=skip")) == 0
    shown = capfd.readouterr()
    assert "Corrupt EXIF" not in shown.out + shown.err
    manifest = pd.read_parquet(tmp_path / "out" / "mine" / "manifest.parquet").set_index("row_id")
    assert manifest.loc["exif.jpg", "warning"].startswith("EXIF orientation ignored: Corrupt EXIF data")


def hue_model(path):
    """A 3-channel classifier that sees only hue: class 0 where red exceeds green, class 1 where
    green exceeds red; a gray image (R = G = B) scores 0.5 for both."""
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(2, 1, activation="relu", name="features")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    red_minus_green = np.zeros((1, 1, 3, 2), np.float32)
    red_minus_green[0, 0, :2] = [[4, -4], [-4, 4]]
    model.get_layer("features").set_weights([red_minus_green, np.zeros(2, np.float32)])
    model.layers[-1].set_weights([np.eye(2, dtype=np.float32) * 4, np.zeros(2, np.float32)])
    model.save(path)
    return model


def test_unlabelled_colour_images_reach_an_rgb_model_in_colour(tmp_path, ray_cluster):
    from medray.models.preprocessing import DECLARED_PREPROCESSING

    rng = np.random.default_rng(0)
    images = {f"hue{index}.png": np.clip(np.asarray(((200, 80, 120), (60, 150, 124))[index % 2], float)
                                         + rng.uniform(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
              for index in range(4)}
    for name, pixels in images.items():
        write(tmp_path / "scans" / name, image_bytes(pixels))
    model = hue_model(tmp_path / "hues.keras")
    assert main(explain_args(tmp_path / "hues.keras", tmp_path / "scans", tmp_path / "out", "data.source=folders",
                             "data.color=rgb", "explain.preprocess=symmetric", "explain.checks=false")) == 0
    out = tmp_path / "out" / "mine"
    assert pq.read_schema(out / "manifest.parquet").metadata[b"medray.color"] == b"rgb"
    predictions = pd.read_parquet(out / "predictions.parquet").set_index("row_id").loc[list(images)]
    expected = model.predict(DECLARED_PREPROCESSING["symmetric"](np.stack(list(images.values())).astype(np.float32)),
                             verbose=0)
    assert np.allclose(np.stack(predictions["probabilities"]), expected, atol=1e-4)
    assert list(predictions["prediction_name"]) == ["normal", "tumour", "normal", "tumour"]
