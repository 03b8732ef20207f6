"""Non-square scans: every map is stored, and every overlay drawn, in its own image's geometry (the
model's square input resized back to the scan's width and height), so that it lies on the scan."""


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from medray.cli import main
from medray.keras_setup import keras

from conftest import DEMO_CONFIG
from data_factory import image_bytes, write
from test_dicom import write_dicom

CLASSES = ["spot", "none"]
INPUT = 16  # the model's square input


def brightness_model(path):
    """A classifier whose Grad-CAM of class `spot` is the input image itself: a 1x1 convolution that
    copies the pixels ("features"), average pooling, and logits (+mean, -mean). The map's peak is
    then where the image is brightest, wherever the scan puts it."""
    inputs = keras.Input((INPUT, INPUT, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", activation="relu",
                                   name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    head = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]),
                              bias_initializer="zeros")(pooled)
    keras.Model(inputs, head).save(path)
    return path


def spotted(width: int, height: int, spot: tuple[int, int, int, int]) -> np.ndarray:
    """A dim (height, width) scan with one bright box (left, top, right, bottom; right/bottom excluded)."""
    pixels = np.full((height, width), 30, np.uint8)
    left, top, right, bottom = spot
    pixels[top:bottom, left:right] = 250
    return pixels


# name -> (width, height, bright box): wider than tall, taller than wide, one as large as an X-ray
# thumbnail, and the box away from the centre so that a map in another geometry misses it.
SCANS = {"wide.png": (30, 20, (22, 13, 26, 17)), "tall.png": (18, 28, (3, 4, 7, 8)),
         "large.png": (300, 200, (220, 140, 250, 170))}


def centre(box):
    left, top, right, bottom = box
    return (left + right - 1) / 2, (top + bottom - 1) / 2


def explain_args(model, data_path, out, *extra):
    args = ["explain", "--config", str(DEMO_CONFIG), "--model", str(model)]
    for override in (f"data.path={data_path}", f"output.dir={out}", "output.run_id=mine", "model.input_size=null",
                     "explain.batch_size=4", "explain.gallery_size=2", "explain.preprocess=none",
                     "explain.check_sample=0", *extra):
        args += ["--set", override]
    return args


def stored_map(row) -> np.ndarray:
    return np.asarray(row.cam, np.float32).reshape(row.cam_height, row.cam_width)


def assert_peak_in(cam: np.ndarray, box, slack: float = 2.0):
    row, column = np.unravel_index(np.argmax(cam), cam.shape)
    x, y = centre(box)
    assert abs(column - x) <= slack + (box[2] - box[0]) / 2 and abs(row - y) <= slack + (box[3] - box[1]) / 2, (
        (column, row), box)


def test_unlabelled_non_square_scans_get_maps_and_overlays_in_their_own_width_and_height(tmp_path, ray_cluster):
    folder = tmp_path / "scans"
    for name, (width, height, box) in SCANS.items():
        write(folder / name, image_bytes(spotted(width, height, box)))
    # a DICOM file 24 columns wide, 14 rows tall: stored values up to 2000, windowed to 8 bits
    dicom_box = (17, 9, 21, 13)
    write_dicom(folder / "IM0001.dcm", spotted(24, 14, dicom_box).astype(np.uint16) * 8)
    model = brightness_model(tmp_path / "bright.keras")
    assert main(explain_args(model, folder, tmp_path / "out", "data.source=folders",
                             f"data.class_names=[{','.join(CLASSES)}]")) == 0
    explain = tmp_path / "out" / "mine" / "explain"
    maps = pq.read_table(explain / "maps").to_pandas().set_index("row_id")
    scans = {**SCANS, "IM0001.dcm": (24, 14, dicom_box)}
    assert sorted(maps.index) == sorted(scans)
    for name, (width, height, box) in scans.items():
        row = next(maps.loc[[name]].itertuples())
        assert (row.cam_height, row.cam_width) == (height, width), name
        cam = stored_map(row)
        assert_peak_in(cam, box)
        with Image.open(explain / "overlays" / row.overlay_file) as overlay:
            overlay = np.asarray(overlay.convert("RGB")).astype(int)
        # whole pixels of the scan, enlarged alike in both directions for small scans
        scale = overlay.shape[1] // width
        assert overlay.shape[:2] == (height * scale, width * scale) and overlay.shape[1] % width == 0, name
        x, y = centre(box)
        red, blue = overlay[..., 0] - overlay[..., 2], overlay[..., 2] - overlay[..., 0]
        assert red[int(y * scale + scale // 2), int(x * scale + scale // 2)] > 0  # the hot end of the colormap
        far = (0, 0) if x > width / 2 else (height * scale - 1, width * scale - 1)
        assert blue[far] > 0  # the cold end, far from the spot
    assert maps.loc["large.png", "overlay_file"] and Image.open(
        explain / "overlays" / maps.loc["large.png", "overlay_file"]).size == (300, 200)


def multilabel_parquet(folder, scans: dict) -> None:
    """Multi-label rows of non-square scans, each with the bright box as its bright lesion's mask
    and the opposite corner as its dark lesion's (a lesion that the map must not point at)."""
    from medray.data.synth import encode_png, huggingface_multilabel_schema, mask_column

    columns = {"image": [], "labels": [], mask_column("bright_round_lesion"): [],
               mask_column("dark_irregular_lesion"): []}
    for name, (width, height, box) in scans.items():
        bright = np.zeros((height, width), np.uint8)
        bright[box[1]:box[3], box[0]:box[2]] = 255
        dark = np.zeros((height, width), np.uint8)
        dark[-box[3]:-box[1] or None, -box[2]:-box[0] or None] = 255  # the box turned half a turn
        columns["image"].append({"bytes": encode_png(spotted(width, height, box)), "path": name})
        columns["labels"].append(["bright_round_lesion", "dark_irregular_lesion"])  # each label seen in training
        columns[mask_column("bright_round_lesion")].append({"bytes": encode_png(bright), "path": name})
        columns[mask_column("dark_irregular_lesion")].append({"bytes": encode_png(dark), "path": name})
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        pq.write_table(pa.table(columns, schema=huggingface_multilabel_schema()),
                       folder / f"{split}-00000-of-00001.parquet")


def test_multi_label_maps_overlays_and_lesion_checks_of_non_square_scans_agree_with_each_label(tmp_path, ray_cluster):
    from medray.config import load_config
    from medray.data.pipeline import read_split
    from medray.data.sources import discover
    from medray.explain.bulk import explain_split
    from medray.models.actor import UserModelSpec
    from medray.models.preprocessing import DECLARED_PREPROCESSING, ModelInput
    from medray.task import make_task

    from conftest import ROOT

    scans = {name: SCANS[name] for name in ("wide.png", "tall.png")}
    multilabel_parquet(tmp_path / "parquet", scans)
    # both labels' logits rise with the image's brightness, so both maps peak on the bright box
    inputs = keras.Input((INPUT, INPUT, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", activation="relu",
                                   name="features")(inputs)
    head = keras.layers.Dense(2, activation="sigmoid", kernel_initializer="ones",
                              bias_initializer="zeros")(keras.layers.GlobalAveragePooling2D()(features))
    keras.Model(inputs, head).save(tmp_path / "labels.keras")
    config = load_config(ROOT / "configs" / "demo_multilabel.yaml", [
        f"data.path={tmp_path / 'parquet'}", "explain.target=all", "explain.check_sample=0",
        "explain.gallery_size=2", "explain.batch_size=4"])
    source = discover(config.data)
    task = make_task("multi_label", source.class_names, source.multi_label)
    outcome = explain_split(read_split(source, "test", INPUT, config.data, originals=True),
                            (tmp_path / "labels.keras").read_bytes(),
                            UserModelSpec(".keras", ModelInput(1, DECLARED_PREPROCESSING["none"]), None),
                            task, config.explain, tmp_path / "explain")
    maps = pq.read_table(outcome.maps_dir).to_pandas()
    assert len(maps) == 2 * len(scans)
    for row in maps.itertuples():
        name = list(scans)[int(row.row_id.rsplit("#", 1)[1])]  # row ids: <file>#<row>
        width, height, box = scans[name]
        assert (row.cam_height, row.cam_width) == (height, width), name
        assert_peak_in(stored_map(row), box)
        label = source.class_names[row.target]
        assert row.overlay_file.startswith(f"gradcam/{label}/")
        with Image.open(outcome.overlay_dir / row.overlay_file) as overlay:
            assert overlay.width * height == overlay.height * width and overlay.width % width == 0
        # each label's map against that label's mask, both at the model's input size
        assert row.pointing_game == (1.0 if label == "bright_round_lesion" else 0.0), (name, label)
