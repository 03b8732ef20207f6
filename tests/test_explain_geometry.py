"""Non-square scans: every map is stored, and every overlay drawn, in its own image's geometry (the
model's square input resized back to the scan's width and height), so that it lies on the scan."""


import numpy as np
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
