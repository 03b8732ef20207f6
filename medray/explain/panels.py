"""What a person sees of a volume's map: one PNG panel (2 x 2, square like an image's overlay, so
galleries tile it alike) of the three orthogonal slices through the map's peak (axial, coronal,
sagittal) and a maximum-intensity projection, each with the map over the voxels; and the map
itself, upsampled to the volume, as one .npy file per map.

A volume cannot be looked at whole: slicing through the map's peak shows where the model looked
at full resolution, and the projection shows whether the map has other hot spots off those
slices. Runs in the bulk job's CPU tasks after the CAM actors (matplotlib and scipy, no TensorFlow).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure
from scipy import ndimage

from medray.explain.overlay import ALPHA, COLORMAP, encode_overlays

VOLUME_MAPS = "volume_maps"
# Inches per panel of the figure, and its resolution: 4 panels of about 200 px each.
PANEL_INCHES, PANEL_DPI = 2.2, 90
# Map values below this are not coloured, so the anatomy around the hot spot stays visible.
SHOWN_FROM = 0.2
VIEWS = ("axial", "coronal", "sagittal")


def upsample_volume_map(cam: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(d, h, w) map at feature resolution -> (D, H, W) float32 in [0, 1], trilinear."""
    cam = np.asarray(cam, np.float32)
    factors = [new / old for new, old in zip(shape, cam.shape)]
    return np.clip(ndimage.zoom(cam, factors, order=1, mode="nearest", grid_mode=True), 0, 1)


def peak_slices(voxels: np.ndarray, heat: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(view name, slice of the voxels, slice of the map) through the map's maximum, then the
    maximum-intensity projections along D of both."""
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    views = [(f"{name} slice {peak[axis]}", np.take(voxels, peak[axis], axis=axis), np.take(heat, peak[axis], axis=axis))
             for axis, name in enumerate(VIEWS)]
    return views + [("MIP (axial)", voxels.max(axis=0), heat.max(axis=0))]


def volume_panel_png(voxels: np.ndarray, cam: np.ndarray, colorbar: bool = False) -> tuple[bytes, np.ndarray]:
    """voxels: (D, H, W) uint8; cam: (d, h, w) in [0, 1]. Returns (the panel's PNG bytes, the map
    upsampled to (D, H, W)). An all-zero map is shown as the slices through the volume's centre
    with "empty map" in red, never as a blank heat map."""
    heat = upsample_volume_map(cam, voxels.shape)
    empty = heat.max() <= 0
    figure = Figure(figsize=(2 * PANEL_INCHES + 0.6 * colorbar, 2 * PANEL_INCHES + 0.4))
    axes = figure.subplots(2, 2).ravel()
    shown = None
    centre_heat = np.zeros_like(heat)
    if empty:  # the peak of a zero map is voxel 0: show the centre instead
        centre_heat[tuple(side // 2 for side in heat.shape)] = 1
    for axis, (title, plane, plane_heat) in zip(axes, peak_slices(voxels, centre_heat if empty else heat)):
        axis.imshow(plane, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if not empty:
            shown = axis.imshow(np.ma.masked_less(plane_heat, SHOWN_FROM), cmap=COLORMAP, vmin=0, vmax=1,
                                alpha=ALPHA, interpolation="bilinear")
        axis.set_title(title, fontsize=8)
        axis.set_axis_off()
    if empty:
        figure.suptitle("empty map", color="red", fontsize=9)
    if colorbar and shown is not None:
        figure.colorbar(shown, ax=list(axes), fraction=0.02)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PANEL_DPI, bbox_inches="tight")
    return buffer.getvalue(), heat


def encode_volume_panels(table: pa.Table, colorbar: bool) -> pa.Table:
    """The panel PNG and the upsampled map (.npy bytes, float16) of every map of a block of the
    bulk job's output; `map_file` names the map's file under volume_maps/ beside overlays/."""
    pngs, arrays, files = [], [], []
    columns = ["overlay_pixels", "overlay_depth", "overlay_height", "overlay_width", "cam", "cam_depth",
               "cam_height", "cam_width", "overlay_file"]
    for row in table.select(columns).to_pylist():
        voxels = np.frombuffer(row["overlay_pixels"], np.uint8).reshape(
            row["overlay_depth"], row["overlay_height"], row["overlay_width"])
        cam = np.asarray(row["cam"], np.float32).reshape(row["cam_depth"], row["cam_height"], row["cam_width"])
        png, heat = volume_panel_png(voxels, cam, colorbar)
        buffer = io.BytesIO()
        np.save(buffer, heat.astype(np.float16), allow_pickle=False)
        pngs.append(png)
        arrays.append(buffer.getvalue())
        files.append(str(Path(row["overlay_file"]).with_suffix(".npy")))
    return (table.drop_columns(["overlay_pixels", "overlay_depth", "overlay_height", "overlay_width"])
            .append_column("overlay", pa.array(pngs, pa.binary()))
            .append_column("map_file", pa.array(files, pa.string()))
            .append_column("volume_map", pa.array(arrays, pa.binary())))


def encode_overlay_table(table: pa.Table, colorbar: bool) -> pa.Table:
    """The bulk job's overlay step: slice panels for maps of volumes (their rows carry the volume's
    depth), heat-map overlays for maps of images."""
    if "overlay_depth" in table.column_names:
        return encode_volume_panels(table, colorbar)
    return encode_overlays(table, colorbar)


def write_volume_maps(table: pa.Table, out_dir: Path) -> pa.Table:
    """Writes the upsampled maps of a shard to out_dir/volume_maps/<map_file> (np.load(...,
    allow_pickle=False) reads them) and drops their bytes from the table; other tables pass."""
    if "volume_map" not in table.column_names:
        return table
    for relative, data in zip(table["map_file"].to_pylist(), table["volume_map"].to_pylist()):
        path = out_dir / VOLUME_MAPS / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return table.drop_columns(["volume_map"])
