"""NIfTI files (.nii, .nii.gz) -> one volume each, with nibabel.

Read and turned to one canonical orientation (RAS+, nibabel's `as_closest_canonical`), whatever the
scanner's affine, then laid out as medray's (D, H, W): D runs inferior -> superior (axial slices),
H posterior -> anterior, W left -> right. Voxel spacing (mm) is kept with the volume. A .nii.gz is
decompressed with a ceiling, so a gzip bomb is refused before it fills memory. A lesion mask stored
as NIfTI is read the same way, so it lines up with its volume whatever either file's affine.
"""

from __future__ import annotations

import zlib

import numpy as np

from medray import storage
from medray.data.volumes import MAX_VOXELS, Volume
from medray.errors import BadImage

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Header and extensions a NIfTI file may carry beside its voxels.
HEADER_ALLOWANCE = 2 ** 20


def is_nifti_name(file: str) -> bool:
    name = storage.name(file).lower()
    return name.endswith(NIFTI_SUFFIXES) and not name.startswith(".")


def read_nifti(content: bytes, where: str, max_voxels: int = MAX_VOXELS) -> Volume:
    """A NIfTI file's bytes -> its volume in canonical (D, H, W) order with its spacing.

    Raises BadImage naming `where` for a file nibabel cannot read, a header whose dimensions the
    data does not fill, more than three spatial axes of data (fMRI, multi-echo), more than
    `max_voxels` voxels (data.max_image_pixels), or a .nii.gz that inflates beyond what that many
    8-byte voxels take.
    """
    import nibabel

    max_voxels = min(max_voxels, MAX_VOXELS)
    if content[:2] == b"\x1f\x8b":
        ceiling = max_voxels * 8 + HEADER_ALLOWANCE
        inflater = zlib.decompressobj(wbits=31)
        content = inflater.decompress(content, ceiling)
        if inflater.unconsumed_tail:
            raise BadImage(f"{where}: decompresses to more than {ceiling:,} bytes (a gzip bomb?), more than "
                           f"data.max_image_pixels={max_voxels} voxels take; remove it, or raise the limit only "
                           "for files you trust", "over pixel limit")
    try:
        image = nibabel.Nifti1Image.from_bytes(content)
        shape = image.header.get_data_shape()
        if int(np.prod(shape)) > max_voxels:
            raise BadImage(f"{where}: header says {'x'.join(map(str, shape))} voxels, over {max_voxels} "
                           "(data.max_image_pixels); crop or downsample it first", "over pixel limit")
        squeezed = [side for side in shape[3:] if side != 1]
        if len(shape) < 3 or squeezed:
            raise BadImage(f"{where}: holds a {len(shape)}-D array {tuple(shape)}, not one volume (a time series "
                           "or several echoes?); split it into 3-D volumes", "not a volume")
        canonical = nibabel.as_closest_canonical(image)
        voxels = np.asanyarray(canonical.dataobj).reshape(canonical.shape[:3])
    except BadImage:
        raise
    except Exception as error:  # noqa: BLE001  (nibabel raises many types on a broken file)
        raise BadImage(f"{where}: cannot read the NIfTI file ({type(error).__name__}: {error}); the header and "
                       "the data may disagree: remove or replace it", "not an image") from None
    spacing = tuple(float(zoom) for zoom in canonical.header.get_zooms()[:3])
    # (R, A, S) -> (S, A, R): axial slices first, as medray's volumes are (D, H, W).
    return Volume(np.ascontiguousarray(voxels.transpose(2, 1, 0)), spacing[::-1])
