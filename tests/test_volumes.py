"""3-D volumes: the head phantoms, the npz_volumes source and its refusals, volume resampling and
augmentation, 3-D models with their CAM layer, 3-D Grad-CAM and its checks, the slice panels."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from medray.config import load_config
from medray.data.augment import augment_volumes
from medray.data.decode import decode_native, resize_pixels
from medray.data.phantoms3d import CLASS_NAMES, make_volume_phantoms
from medray.data.sources import discover
from medray.data.synth_volumes import VOLUMES_FILE, write_volume_dataset
from medray.data.volumes import Volume, resize_mask_volume
from medray.errors import BadImage, MedrayError
from medray.explain import checks
from medray.explain.panels import peak_slices, volume_panel_png
from medray.job import prepare_job

from conftest import ROOT

DEMO_3D = ROOT / "configs" / "demo_3d.yaml"
SIDE = 16


@pytest.fixture(scope="module")
def volume_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes") / "demo"
    write_volume_dataset(root, train=24, val=9, test=12, size=SIDE, seed=1)
    return root / VOLUMES_FILE


def config_for(path, *overrides):
    return load_config(DEMO_3D, [f"data.path={path}", f"model.input_size=[{SIDE},{SIDE},{SIDE}]", *overrides])


def test_phantom_lesions_are_brighter_or_darker_than_the_brain_and_masked():
    images, masks, labels = make_volume_phantoms(12, 24, seed=0)
    assert images.shape == masks.shape == (12, 24, 24, 24) and images.dtype == np.uint8
    assert not masks[labels == 0].any()
    for image, mask, label in zip(images, masks, labels):
        if label == 0:
            continue
        assert mask.any()
        # Tissue right around the lesion (a shell a few voxels wide) is the reference.
        from scipy import ndimage
        shell = ndimage.binary_dilation(mask, iterations=2) & ~mask
        inside, around = image[mask].mean(), image[shell].mean()
        assert (inside > around + 20) if CLASS_NAMES[label] == "bright_round_lesion" else (inside < around - 20)


def test_volume_source_discovers_splits_classes_and_masks(volume_dataset):
    job = prepare_job(config_for(volume_dataset))
    assert job.image_size == (SIDE, SIDE, SIDE)
    assert job.source.has_masks and job.source.color == "gray"
    assert [job.source.num_rows(split) for split in ("train", "val", "test")] == [24, 9, 12]
    assert job.source.class_names == list(CLASS_NAMES)


def test_a_2d_image_stack_in_a_volume_dataset_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "slices.npz"
    arrays = {f"{split}_{what}": np.zeros((4, 16, 16) if what == "images" else (4, 1), np.uint8)
              for split in ("train", "val", "test") for what in ("images", "labels")}
    np.savez(path, **arrays)
    with pytest.raises(MedrayError, match=r"slices\.npz: train_images has shape \(4, 16, 16\).*2-D images"):
        discover(config_for(path).data)


def test_a_4d_series_in_a_volume_dataset_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "fmri.npz"
    arrays = {f"{split}_{what}": np.zeros((2, 8, 8, 8, 5) if what == "images" else (2, 1), np.uint8)
              for split in ("train", "val", "test") for what in ("images", "labels")}
    np.savez(path, **arrays)
    with pytest.raises(MedrayError, match=r"fmri\.npz: train_images .* 5 values per voxel"):
        discover(config_for(path).data)


def test_a_row_that_is_not_one_volume_is_a_bad_image_naming_the_row():
    with pytest.raises(BadImage, match="scan.nii row 3: is a 4-D array"):
        decode_native(Volume(np.zeros((4, 8, 8, 8), np.int16)), 10**9, "scan.nii row 3")


def test_volumes_of_other_dtypes_are_stretched_to_8_bits():
    voxels, mode = decode_native(Volume(np.linspace(-1000, 3000, 512).reshape(8, 8, 8)), 10**9, "ct")
    assert mode == "volume" and voxels.dtype == np.uint8 and (voxels.min(), voxels.max()) == (0, 255)


def test_a_volume_is_resampled_to_the_model_input_and_its_mask_stays_binary():
    volume = np.zeros((20, 24, 28), np.uint8)
    volume[10:, :, :] = 200
    resized = resize_pixels(volume, (10, 12, 14))
    assert resized.shape == (10, 12, 14)
    assert resized[0].max() == 0 and resized[-1].min() == 200  # the step stays where it was
    mask = resize_mask_volume(volume, (10, 12, 14))
    assert set(np.unique(mask)) == {0, 255}


def test_volume_augmentation_moves_every_slice_alike_and_follows_the_row_seed():
    config = load_config(DEMO_3D, ["data.path=unused", "data.augment.rotation_degrees=30",
                                   "data.augment.brightness=0"])
    plane = np.zeros((16, 16), np.uint8)
    plane[3:7, 2:12] = 250  # asymmetric, so a flip or rotation shows
    volumes = np.repeat(np.repeat(plane[None], 6, axis=0)[None], 3, axis=0)
    seeds = np.array([0.11, 0.52, 0.93])
    moved = augment_volumes(volumes, seeds, config.data.augment)
    assert moved.shape == volumes.shape and moved.dtype == np.float32
    assert np.allclose(moved[:, :1], moved)  # the same transform for all slices of a volume
    assert not np.allclose(moved, volumes)
    assert np.array_equal(moved, augment_volumes(volumes, seeds, config.data.augment))


def test_a_2d_backbone_on_volumes_is_refused_before_ray_starts(volume_dataset):
    with pytest.raises(MedrayError, match="holds 3-D volumes but model.backbone baseline_cnn reads 2-D images"):
        prepare_job(config_for(volume_dataset, "model.backbone=baseline_cnn", "model.input_size=32"))
    with pytest.raises(MedrayError, match=r"model.input_size=32: model.backbone cnn3d reads 3-D volumes"):
        prepare_job(config_for(volume_dataset, "model.input_size=32"))


@pytest.mark.parametrize("backbone", ["cnn3d", "resnet18_3d"])
def test_3d_grad_cam_reads_the_registry_layer_and_maps_volumes(backbone):
    from medray.explain.cam import CamExplainer
    from medray.models.classifier import build_classifier
    from medray.models.registry import get_backbone
    from medray.task import SingleLabelTask

    config = load_config(DEMO_3D, ["data.path=unused"])
    entry = get_backbone(backbone)
    model = build_classifier(entry, (SIDE, SIDE, SIDE), SingleLabelTask(CLASS_NAMES).head, config.model)
    explainer = CamExplainer(model, entry.cam_layers, ["gradcam", "gradcam++", "hirescam", "scorecam"])
    images = np.random.default_rng(0).random((2, SIDE, SIDE, SIDE, 1), np.float32)
    explained = explainer(images, np.array([1, 2]))
    grid = tuple(model.get_layer(entry.cam_layers[0]).output.shape[1:4])
    for maps in explained.maps.values():
        assert maps.shape == (2, 1, *grid)
        assert np.all((maps >= 0) & (maps <= 1))
    assert explained.targets[:, 0].tolist() == [1, 2]


def test_3d_pointing_game_and_energy_score_the_upsampled_volume_map():
    maps = np.zeros((2, 4, 4, 4), np.float32)
    maps[0, 1, 2, 3] = 1.0  # its peak upsamples to voxels (4-5, 8-9, 12-13) of a 16^3 volume
    maps[1, 0, 0, 0] = 1.0
    upsampled = checks.upsample_maps(maps, (16, 16, 16))
    assert upsampled.shape == (2, 16, 16, 16)
    masks = np.zeros((2, 16, 16, 16), np.uint8)
    masks[:, 3:7, 7:11, 11:15] = 255
    assert checks.pointing_game(upsampled, masks).tolist() == [1.0, 0.0]
    energy = checks.energy_in_lesion(upsampled, masks)
    chance = checks.lesion_share(masks)[0]  # 64 of 4096 voxels
    assert energy[0] > 10 * chance and energy[1] < energy[0] / 4


def test_a_volume_panel_slices_through_the_maps_peak_and_keeps_the_upsampled_map():
    voxels = np.full((12, 16, 20), 40, np.uint8)
    cam = np.zeros((3, 4, 5), np.float32)
    cam[2, 1, 4] = 1.0
    png, heat = volume_panel_png(voxels, cam)
    assert heat.shape == voxels.shape
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    titles = [title for title, _plane, _heat in peak_slices(voxels, heat)]
    assert titles[:3] == [f"axial slice {peak[0]}", f"coronal slice {peak[1]}", f"sagittal slice {peak[2]}"]
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and 0.8 < image.width / image.height < 1.25  # 2 x 2, tiles like an overlay


def test_demo_3d_runs_end_to_end_with_panels_and_volume_maps(volume_dataset, tmp_path, ray_cluster):
    import pyarrow.parquet as pq

    from medray.cli import main

    args = ["run", "--config", str(DEMO_3D)]
    for override in (f"data.path={volume_dataset}", f"model.input_size=[{SIDE},{SIDE},{SIDE}]", "train.epochs=1",
                     "model.conv_filters=[4,8]", f"output.dir={tmp_path}", "output.run_id=v3"):
        args += ["--set", override]
    assert main(args) in (0, None)
    explain = tmp_path / "v3" / "explain"
    maps = pq.read_table(explain / "maps").to_pandas()
    assert len(maps) == 12 and set(maps["cam_depth"]) == {SIDE}  # the first of two blocks: not pooled yet
    stored = np.load(explain / "volume_maps" / maps["map_file"].iloc[0], allow_pickle=False)
    assert stored.shape == (SIDE, SIDE, SIDE)
    assert maps.loc[(maps["label"] > 0) & ~maps["empty"], "pointing_game"].notna().all()
    assert maps.loc[maps["label"] == 0, "pointing_game"].isna().all()
    with Image.open(explain / "overlays" / maps["overlay_file"].iloc[0]) as panel:
        assert panel.format == "PNG" and panel.width > 200


def test_demo_3d_runs_on_its_nifti_listing_and_scores_the_maps_against_the_nifti_masks(volume_dataset, tmp_path,
                                                                                      ray_cluster):
    import pyarrow.parquet as pq

    from medray.cli import main
    from medray.data.synth_volumes import LISTING_FILE

    args = ["run", "--config", str(DEMO_3D)]
    for override in (f"data.path={volume_dataset.parent.parent / LISTING_FILE}", "data.source=csv",
                     "data.split_column=split", "data.label_separator=null", f"model.input_size=[{SIDE},{SIDE},{SIDE}]", "train.epochs=1",
                     "model.conv_filters=[4,8]", "explain.check_sample=0", f"output.dir={tmp_path}",
                     "output.run_id=csv3"):
        args += ["--set", override]
    assert main(args) in (0, None)
    maps = pq.read_table(tmp_path / "csv3" / "explain" / "maps").to_pandas()
    assert len(maps) == 12 and maps["row_id"].str.endswith(".nii.gz").all()
    # Lesion volumes are scored against their NIfTI masks; volumes without a mask file have no lesion.
    assert maps.loc[(maps["label"] > 0) & ~maps["empty"], "pointing_game"].notna().all()
    assert maps.loc[(maps["label"] > 0) & ~maps["empty"], "energy_in_lesion"].notna().all()
    assert maps.loc[maps["label"] == 0, "pointing_game"].isna().all()


def nifti_config(path, *overrides):
    return config_for(path, "data.source=nifti", "data.class_names=null", *overrides)


def test_nifti_class_folders_hold_the_same_volumes_as_the_npz(volume_dataset):
    from medray.data.readers import rows_of
    from medray.data.sources.base import reader_settings

    config = nifti_config(volume_dataset.parent.parent / "nifti")
    job = prepare_job(config)
    assert job.source.class_names == sorted(CLASS_NAMES) and job.source.num_rows("test") == 12
    arrays = np.load(volume_dataset, allow_pickle=False)
    piece = next(piece for piece in job.source.pieces["test"] if piece["row_ids"][0].endswith("test_00004.nii.gz"))
    row = next(rows_of("nifti", piece, reader_settings(job.source, config.data)))
    assert np.array_equal(decode_native(row.content, 10**9, row.where)[0], arrays["test_images"][4])


def test_nifti_is_turned_to_canonical_orientation_whatever_its_affine(tmp_path):
    import nibabel

    from medray.data.sources.nifti import read_nifti

    ras = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (R, A, S)
    # The same head stored left-to-right reversed (LAS), with 2 mm slices.
    las = nibabel.Nifti1Image(ras[::-1].copy(), np.diag([-1.0, 1.0, 2.0, 1.0]))
    volume = read_nifti(las.to_bytes(), "las.nii")
    assert np.array_equal(volume.voxels, ras.transpose(2, 1, 0))
    assert volume.spacing == (2.0, 1.0, 1.0)


def test_a_4d_nifti_and_a_truncated_one_and_a_gzip_bomb_are_bad_images_naming_the_file():
    import gzip

    import nibabel

    from medray.data.sources.nifti import HEADER_ALLOWANCE, read_nifti

    series = nibabel.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)).to_bytes()
    with pytest.raises(BadImage, match=r"fmri.nii: holds a 4-D array \(4, 4, 4, 3\)"):
        read_nifti(series, "fmri.nii")
    whole = nibabel.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)).to_bytes()
    with pytest.raises(BadImage, match="cut.nii: cannot read the NIfTI file"):
        read_nifti(whole[:-100], "cut.nii")
    bomb = gzip.compress(whole[:352] + bytes(HEADER_ALLOWANCE + 8 * 1000 + 1), compresslevel=1)
    with pytest.raises(BadImage, match="bomb.nii.gz: decompresses to more than"):
        read_nifti(bomb, "bomb.nii.gz", max_voxels=1000)


def write_slice(path, plane: np.ndarray, z: float, series: str, slope=2.0, intercept=-1000.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID = series
    dataset.Rows, dataset.Columns = plane.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.ImagePositionPatient = [-10.0, -10.0, z]
    dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dataset.PixelSpacing = [0.5, 0.5]
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    dataset.PixelData = plane.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


def test_a_dicom_series_is_stacked_by_position_not_file_name_and_a_missing_slice_is_named(tmp_path):
    from pydicom.uid import generate_uid

    from medray.data.readers import rows_of
    from medray.data.sources.base import reader_settings

    stored = np.random.default_rng(0).integers(0, 1000, (6, 8, 8)).astype(np.uint16)
    root = tmp_path / "studies"
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            for study in ("s1", "s2"):
                folder = root / split / label / study
                folder.mkdir(parents=True)
                series = generate_uid()
                # File names run against the slices' order along the patient axis.
                names = np.random.default_rng(len(str(folder))).permutation(6)
                for index, plane in enumerate(stored):
                    if (split, label, study) == ("test", "b", "s2") and index == 3:
                        continue  # this study lacks its fourth slice
                    write_slice(folder / f"IM{names[index]:04d}", plane, z=2.5 * index - 5, series=series)
    config = config_for(root, "data.source=dicom_series", "data.class_names=null")
    source = prepare_job(config).source
    settings = reader_settings(source, config.data)
    rows = {piece["row_ids"][0]: next(rows_of("dicom_series", piece, settings)) for piece in source.pieces["test"]}
    volume = rows["test/a/s1"].content
    assert isinstance(volume, Volume) and volume.spacing == (2.5, 0.5, 0.5)
    np.testing.assert_array_equal(volume.voxels, stored * 2.0 - 1000)  # voxel by voxel, rescaled
    broken = rows["test/b/s2"].content
    assert isinstance(broken, BadImage)
    assert re.search(r"test/b/s2: 1 slice missing between IM\d{4} and IM\d{4} \(5 mm apart", str(broken))


def test_deletion_of_a_volume_in_its_maps_order_drops_the_score_faster_than_random_order():
    images = np.zeros((2, 8, 8, 8, 1), np.float32)
    images[:, 2:4, 2:4, 2:4] = 1.0  # the only evidence: a bright 2^3 cube

    def predict(batch):  # the "class 1" probability grows with the cube's brightness
        evidence = batch[:, 2:4, 2:4, 2:4].mean(axis=(1, 2, 3, 4))
        return np.stack([1 - evidence, evidence], axis=1)

    maps = np.zeros((2, 8, 8, 8), np.float32)
    maps[:, 2:4, 2:4, 2:4] = 1.0
    targets = np.array([1, 1])
    deletion, insertion = checks.deletion_insertion_auc(images, maps, targets, predict, steps=8)
    random_deletion, random_insertion = checks.deletion_insertion_auc(images, maps, targets, predict, steps=8,
                                                                      order="random")
    assert np.all(deletion < random_deletion) and np.all(insertion > random_insertion)


def test_ssim_of_volume_maps_is_one_for_equal_maps_and_lower_for_moved_ones():
    from medray.explain.sanity import structural_similarity

    maps = np.zeros((2, 4, 4, 4), np.float32)
    maps[:, 1, 1, 1] = 1.0
    moved = np.roll(maps, 2, axis=3)
    same = structural_similarity(maps, maps, (16, 16, 16))
    assert same.shape == (2,) and np.allclose(same, 1.0)
    assert np.all(structural_similarity(maps, moved, (16, 16, 16)) < 0.9)


def test_a_test_volume_that_is_also_a_train_volume_is_found_as_leakage(volume_dataset, tmp_path, ray_cluster):
    from medray.data.inspect import inspect_data

    arrays = dict(np.load(volume_dataset, allow_pickle=False))
    arrays["test_images"][5] = arrays["train_images"][2]  # the same scan in two splits
    leaky = tmp_path / "leaky.npz"
    np.savez(leaky, **arrays)
    report = inspect_data(config_for(leaky), tmp_path / "inspect")
    assert report["modes"] == {"volume": 45}
    assert report["duplicates_across_splits"]["train-test"]["images"] == 1


def test_a_ct_window_maps_its_hounsfield_range_to_8_bits_and_clips_beyond(volume_dataset):
    from medray.data.sources.base import reader_settings

    config = config_for(volume_dataset, "data.window=brain")
    settings = reader_settings(prepare_job(config).source, config.data)
    assert settings["window"] == (40.0, 80.0)
    hounsfield = np.array([-1000, 0, 40, 80, 1000], np.int16).reshape(1, 1, 5)
    voxels, _ = decode_native(Volume(hounsfield, window=settings["window"]), 10**9, "ct")
    assert voxels.ravel().tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(MedrayError, match="data.window"):
        config_for(volume_dataset, "data.window=[40, -5]")


# NIfTI volumes listed in a CSV (data.source: csv), with lesion masks as NIfTI files.

SHAPE_RAS = (12, 14, 16)  # (R, A, S) as stored in an identity-affine NIfTI; canonical (D, H, W) = (16, 14, 12)
# Left-right reversed (LAS) with 2 mm axial slices: a scanner's affine that is not RAS+.
LAS_AFFINE = np.diag([-1.0, 1.0, 2.0, 1.0])


def save_nifti(path, ras_voxels: np.ndarray, affine: np.ndarray = np.eye(4)) -> str:
    """Write (R, A, S) voxels as NIfTI under `affine` (LAS stores them left-right reversed)."""
    import nibabel

    stored = ras_voxels[::-1] if affine[0, 0] < 0 else ras_voxels
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(stored), affine), path)
    return path.name


def lesion_mask(seed: int) -> np.ndarray:
    """(R, A, S) uint8: an asymmetric block, so a flip or a transposition would move it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE_RAS, np.uint8)
    r, a, s = rng.integers(1, 5), rng.integers(2, 7), rng.integers(3, 9)
    mask[r:r + 5, a:a + 3, s:s + 6] = 1
    return mask


@pytest.fixture()
def nifti_listing(tmp_path):
    """volumes.csv (image, label, split, mask) of 2 classes x 3 splits x 2 volumes of SHAPE_RAS int16,
    "lesion" volumes with a mask file; the first test lesion volume stored LAS with 2 mm slices and
    its mask stored RAS (so only reorientation lines them up). Returns (csv, {row: (ras, mask)})."""
    rows, truth = [], {}
    for split in ("train", "val", "test"):
        for label in ("clear", "lesion"):
            for index in range(2):
                seed = len(rows)
                voxels = np.random.default_rng(seed).integers(0, 1000, SHAPE_RAS).astype(np.int16)
                image, mask, truth_mask = f"{split}/{label}_{index}.nii.gz", "", None
                if label == "lesion":
                    mask, truth_mask = f"masks/{split}_{label}_{index}.nii", lesion_mask(seed)
                    save_nifti(tmp_path / "volumes" / mask, truth_mask)
                    voxels = voxels + 300 * truth_mask.astype(np.int16)  # the lesion is bright
                odd = (split, label, index) == ("test", "lesion", 0)
                save_nifti(tmp_path / "volumes" / image, voxels, LAS_AFFINE if odd else np.eye(4))
                rows.append((image, label, split, mask))
                truth[image] = (voxels, truth_mask)
    listing = tmp_path / "volumes" / "volumes.csv"
    listing.write_text("image,label,split,mask\n" + "".join(",".join(row) + "\n" for row in rows))
    return listing, truth


def csv_config(listing, *overrides):
    canonical = list(SHAPE_RAS[::-1])
    return config_for(listing, "data.source=csv", "data.class_names=null", "data.split_column=split",
                      "data.label_separator=null",
                      f"model.input_size={canonical}".replace(" ", ""), *overrides)


def canonical(ras: np.ndarray) -> np.ndarray:
    return ras.transpose(2, 1, 0)


def test_nifti_volumes_listed_in_a_csv_are_read_reoriented_voxel_by_voxel_with_their_masks(nifti_listing):
    from medray.data.readers import rows_of
    from medray.data.sources.base import reader_settings

    listing, truth = nifti_listing
    config = csv_config(listing)
    job = prepare_job(config)
    source = job.source
    assert source.spatial_dims == 3 and source.has_masks and not source.multi_label
    assert source.class_names == ["clear", "lesion"]
    assert [source.num_rows(split) for split in ("train", "val", "test")] == [4, 4, 4]
    settings = reader_settings(source, config.data)
    rows = {piece["row_ids"][0]: next(rows_of("csv", piece, settings)) for piece in source.pieces["test"]}
    odd = rows["test/lesion_0.nii.gz"]  # stored LAS with 2 mm slices, its mask RAS
    assert isinstance(odd.content, Volume) and odd.content.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(odd.content.voxels, canonical(truth["test/lesion_0.nii.gz"][0]))
    np.testing.assert_array_equal(odd.mask.voxels, canonical(truth["test/lesion_0.nii.gz"][1]))
    lesion = odd.content.voxels.astype(int)
    assert lesion[odd.mask.voxels > 0].min() >= 300  # the bright block sits where the mask says
    plain = rows["test/clear_1.nii.gz"]
    assert plain.mask is None and plain.content.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(plain.content.voxels, canonical(truth["test/clear_1.nii.gz"][0]))


def test_masks_of_a_nifti_listing_reach_the_decoded_split_reoriented_like_their_volumes(nifti_listing, ray_cluster):
    from medray.data.pipeline import read_split

    listing, truth = nifti_listing
    config = csv_config(listing)
    source = prepare_job(config).source
    rows = read_split(source, "test", tuple(SHAPE_RAS[::-1]), config.data).take_all()
    assert len(rows) == 4
    for row in rows:
        expected = truth[row["row_id"]][1]
        wanted = np.zeros(SHAPE_RAS[::-1], np.uint8) if expected is None else canonical(expected) * 255
        np.testing.assert_array_equal(row["mask"], wanted)  # voxel by voxel, LAS volume included
    # The localisation checks score the maps against those masks: a map peaking in the lesion points.
    from medray.explain import checks

    lesion = next(row for row in rows if row["row_id"] == "test/lesion_0.nii.gz")
    peak = np.zeros((1, *SHAPE_RAS[::-1]), np.float32)
    peak[(0, *np.argwhere(lesion["mask"] > 0)[0])] = 1.0
    assert checks.pointing_game(peak, lesion["mask"][None]).tolist() == [1.0]
    assert checks.pointing_game(peak[:, ::-1, ::-1, ::-1], lesion["mask"][None]).tolist() == [0.0]


def test_a_mask_of_another_shape_than_its_volume_is_one_line_naming_both_files(nifti_listing, ray_cluster):
    from medray.data.pipeline import read_split
    from medray.errors import user_error

    listing, _ = nifti_listing
    save_nifti(listing.parent / "masks" / "test_lesion_1.nii", np.ones((12, 14, 15), np.uint8))  # one slice short
    config = csv_config(listing)
    source = prepare_job(config).source
    with pytest.raises(Exception) as caught:
        read_split(source, "test", tuple(SHAPE_RAS[::-1]), config.data).materialize()
    volume, mask = listing.parent / "test" / "lesion_1.nii.gz", listing.parent / "masks" / "test_lesion_1.nii"
    assert str(user_error(caught.value)) == (
        f"{mask} (the mask of {volume}, {listing} line 13): the mask is 15x14x12 voxels (D x H x W) but its "
        "volume 16x14x12; give each volume a mask of its own shape")


def test_a_bad_row_of_a_nifti_listing_is_named_by_file_and_line(nifti_listing):
    from medray.data.decode import decode_row
    from medray.data.readers import rows_of
    from medray.data.sources.base import reader_settings

    listing, _ = nifti_listing
    broken = listing.parent / "test" / "clear_0.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # cut short
    config = csv_config(listing)
    source = prepare_job(config).source
    piece = next(piece for piece in source.pieces["test"] if piece["row_ids"][0] == "test/clear_0.nii.gz")
    row = next(rows_of("csv", piece, reader_settings(source, config.data)))
    with pytest.raises(BadImage, match=re.escape(f"{listing} line 10 (test/clear_0.nii.gz): cannot read the NIfTI")):
        decode_row(row, 10**9)
    # A 2-D image among volumes stops discovery at its line, before Ray starts.
    text = listing.read_text().replace("test/clear_1.nii.gz", "test/clear_1.png")
    listing.write_text(text)
    with pytest.raises(MedrayError, match=re.escape(f"{listing} line 11: test/clear_1.png is a 2-D image but the "
                                                    "other rows list 3-D volumes")):
        discover(config.data)


def test_a_2d_backbone_on_a_nifti_listing_is_refused_before_ray_starts(nifti_listing):
    listing, _ = nifti_listing
    with pytest.raises(MedrayError, match="data.source csv holds 3-D volumes but model.backbone baseline_cnn"):
        prepare_job(csv_config(listing, "model.backbone=baseline_cnn", "model.input_size=32"))
