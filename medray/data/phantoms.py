"""Synthetic axial T1-like brain-MRI slices with known lesions: demo data that needs no download.

Anatomy is drawn in normalised coordinates (the image spans -1..1 on both axes), so one phantom
looks the same at 28 and at 256 pixels; only blur, noise and the smallest lesion are set in pixels.
The lesion is blended in before the scanner (bias field, gain, Rician noise) is simulated, so the
ground-truth mask marks tissue that changed, not noise.

Two lesion kinds exist. The single-label demo draws at most one per slice (CLASS_NAMES, one class
index each); the multi-label demo (`make_multilabel_phantoms`) draws each kind independently, so a
slice may carry both, one or none (LABEL_NAMES, one 0/1 vector each), with one mask per kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CLASS_NAMES = ("no_lesion", "bright_round_lesion", "dark_irregular_lesion")
# Deliberately imbalanced, as real screening data is: most slices show no lesion.
CLASS_SHARES = (0.6, 0.25, 0.15)
MIN_SIZE = 28
# Anatomy is drawn on at least this many pixels a side, then averaged down to the asked size.
ANATOMY_MIN_PIXELS = 112

# T1-like tissue intensities before gain and noise (1.0 is about full scale).
SCALP, CSF, GRAY_MATTER, WHITE_MATTER = 0.82, 0.12, 0.42, 0.66
# In units of the head's elliptical radius (1.0 = outer edge of the scalp).
BRAIN_RADIUS, SCALP_INNER_RADIUS = 0.84, 0.89
CORTEX_THICKNESS, SULCUS_DEPTH = 0.06, 0.16
# Half the width of the soft lesion edge, as a fraction of the lesion radius; the mask is drawn
# where the lesion reaches half its contrast, the convention of a radiologist's outline.
LESION_EDGE = 0.35
# Pixels of brain a lesion's faintest edge keeps from the skull, ventricles or fissure.
LESION_CLEARANCE_PX = 0.5
# Below this radius a lesion would be a pixel or two in a 28-pixel image: visible to no one.
MIN_LESION_RADIUS_PX = 2.0


@dataclass(frozen=True)
class LesionKind:
    irregular: bool  # a lobulated outline rather than a round one
    level: tuple[float, float]  # the lesion core's intensity is drawn uniformly from this range


# A bright lesion outshines white matter, as an enhancing one does; a dark one sits near CSF.
LESION_KINDS = {
    "bright_round_lesion": LesionKind(irregular=False, level=(0.9, 1.0)),
    "dark_irregular_lesion": LesionKind(irregular=True, level=(0.16, 0.26)),
}
# The multi-label findings, in label-vector order; each single-label class with a lesion is one.
LABEL_NAMES = tuple(LESION_KINDS)
# Each finding occurs in this share of multi-label slices, independently of the other, so that
# both, either alone and neither all occur (0.14, 0.23, 0.23 and 0.39 of the slices).
LABEL_PREVALENCE = 0.375
# Every subset of LABEL_NAMES as a 0/1 vector, "none" first; and its share of the slices.
COMBINATIONS = tuple(tuple(int(bit) for bit in np.binary_repr(index, len(LABEL_NAMES))[::-1])
                     for index in range(2 ** len(LABEL_NAMES)))
COMBINATION_SHARES = tuple(float(np.prod([LABEL_PREVALENCE if bit else 1 - LABEL_PREVALENCE for bit in combination]))
                           for combination in COMBINATIONS)
# When a slice holds two lesions, the later one's faintest edge keeps this fraction of the image
# side from the earlier one's: apart enough that a coarse Grad-CAM map can tell them apart.
LESION_SEPARATION = 0.08


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray  # (size, size) uint8, what the scanner shows
    lesion: np.ndarray  # (size, size) bool, ground truth: where any lesion reaches half contrast
    # (size, size) bool: wholly inside the brain and off the ventricles and midline fissure, where a
    # lesion may grow. Sulci are included: a growing lesion effaces them, as real masses do.
    brain: np.ndarray
    head: np.ndarray  # (size, size) bool, everything inside the scalp's outer edge
    # Each drawn lesion kind (a LESION_KINDS name) -> its (size, size) bool mask; absent kinds are
    # missing. `lesion` is the union of these masks.
    lesions: dict[str, np.ndarray] = field(default_factory=dict)


def make_phantom(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One slice as uint8 (size, size) and its lesion mask as bool (size, size)."""
    phantom = draw_phantom(rng, label, size)
    return phantom.image, phantom.lesion


def make_phantoms(n: int, size: int, seed: int, second_scanner: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n slices, masks and labels; class counts follow CLASS_SHARES exactly, in shuffled order.

    `second_scanner`: a class index whose every slice comes from another scanner (see
    `as_second_scanner`): an acquisition shortcut planted for `medray data inspect` to find.
    """
    rng = np.random.default_rng(seed)
    # Its own generator: planting a second scanner leaves every other slice as it was.
    scanner_rng = np.random.default_rng([seed, 2])
    counts = proportional_class_counts(n)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), counts))
    images = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    for index, label in enumerate(labels):
        images[index], masks[index] = make_phantom(rng, int(label), size)
        if label == second_scanner:
            images[index] = as_second_scanner(scanner_rng, images[index])
    return images, masks, labels


def make_multilabel_phantoms(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n slices, each with any subset of the lesion kinds, in shuffled order.

    Returns images (n, size, size) uint8, masks (n, K, size, size) bool (mask k all False where
    label k is absent) and labels (n, K) uint8 0/1, K = len(LABEL_NAMES) in that order. Each
    combination of findings gets its COMBINATION_SHARES share of n exactly (largest remainder), so
    from n = 4 on every combination occurs. Two lesions on one slice never touch (LESION_SEPARATION).
    """
    rng = np.random.default_rng(seed)
    counts = proportional_class_counts(n, COMBINATION_SHARES)
    combination_of_row = rng.permutation(np.repeat(np.arange(len(COMBINATIONS)), counts))
    labels = np.array([COMBINATIONS[index] for index in combination_of_row], dtype=np.uint8).reshape(n, -1)
    images = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, len(LABEL_NAMES), size, size), dtype=bool)
    for index, present in enumerate(labels):
        names = [name for name, bit in zip(LABEL_NAMES, present) if bit]
        phantom = draw_lesions(rng, names, size)
        images[index] = phantom.image
        for k, name in enumerate(LABEL_NAMES):
            if name in phantom.lesions:
                masks[index, k] = phantom.lesions[name]
    return images, masks, labels


# The second scanner's intensity window: full scale is mapped to [floor, floor + span] (a narrower
# band, raised off black), and its noise is stronger (standard deviation in 0-255 units).
SECOND_SCANNER_FLOOR, SECOND_SCANNER_SPAN, SECOND_SCANNER_NOISE = 70.0, 110.0, 6.0


def as_second_scanner(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The same anatomy as another scanner stores it: another intensity window, more noise."""
    windowed = SECOND_SCANNER_FLOOR + image.astype(np.float64) * (SECOND_SCANNER_SPAN / 255.0)
    noisy = windowed + rng.normal(0, SECOND_SCANNER_NOISE, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def proportional_class_counts(n: int, shares: tuple[float, ...] = CLASS_SHARES) -> np.ndarray:
    """Largest-remainder split of n over shares; from n = len(shares) on, no class is left empty."""
    exact = n * np.asarray(shares) / sum(shares)
    counts = np.floor(exact).astype(np.int64)
    # Stable sort: equal remainders go to the earlier (larger) class, so the result is reproducible.
    by_remainder = np.argsort(-(exact - counts), kind="stable")
    counts[by_remainder[: n - counts.sum()]] += 1
    if n >= len(shares):
        for empty in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[empty] = 1
    return counts


def draw_phantom(rng: np.random.Generator, label: int, size: int) -> Phantom:
    """One slice of single-label class `label` (a CLASS_NAMES index: no lesion or one lesion) with
    its lesion mask and the anatomy masks tests and plots can check it against."""
    if label not in range(len(CLASS_NAMES)):
        raise ValueError(f"label must be 0..{len(CLASS_NAMES) - 1} ({', '.join(CLASS_NAMES)}), got {label}")
    return draw_lesions(rng, [CLASS_NAMES[label]] if label else [], size)


def draw_lesions(rng: np.random.Generator, kinds, size: int) -> Phantom:
    """One slice holding one lesion of each LESION_KINDS name in `kinds` (none, one or several),
    drawn in that order, each wholly in the brain and apart from those drawn before it."""
    unknown = [kind for kind in kinds if kind not in LESION_KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct names of {', '.join(LESION_KINDS)}, got {list(kinds)}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    # Small images are drawn finer and averaged down, so a sulcus thinner than a pixel darkens it
    # a little (partial volume) instead of blacking it out.
    factor = -(-ANATOMY_MIN_PIXELS // size)
    intensity, brain, head = (_block_mean(fine, factor) for fine in _draw_anatomy(rng, size * factor))
    # Only pixels that are brain throughout may hold a lesion, none that is half ventricle.
    brain, head = brain == 1, head >= 0.5
    weights = {}
    # Pixels a lesion already reaches, even faintly: the next lesion keeps its distance from them.
    taken = np.zeros((size, size), dtype=bool)
    for kind in kinds:
        lesion_weight = _draw_lesion(rng, _room_apart(brain, taken), irregular=LESION_KINDS[kind].irregular)
        level = rng.uniform(*LESION_KINDS[kind].level)
        intensity = intensity * (1 - lesion_weight) + level * lesion_weight
        weights[kind] = lesion_weight
        taken |= lesion_weight > 0
    lesions = {kind: weight >= 0.5 for kind, weight in weights.items()}
    union = np.zeros((size, size), dtype=bool)
    for mask in lesions.values():
        union |= mask
    return Phantom(_scan(rng, intensity), union, brain, head, lesions)


def _room_apart(brain: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """The brain without the pixels within LESION_SEPARATION of an earlier lesion (just without
    the lesion itself when a small brain has no room for that)."""
    if not taken.any():
        return brain
    gap_px = LESION_SEPARATION * brain.shape[0]
    apart = brain & (ndimage.distance_transform_edt(~taken) > gap_px)
    smallest_reach = MIN_LESION_RADIUS_PX * (1 + LESION_EDGE) + LESION_CLEARANCE_PX
    if ndimage.distance_transform_edt(apart).max() >= smallest_reach:
        return apart
    return brain & ~ndimage.binary_dilation(taken)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    size = image.shape[0] // factor
    return image.reshape(size, factor, size, factor).mean(axis=(1, 3))


def _draw_anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free intensity, lesion-eligible brain mask and head mask of a random head."""
    pixel = 2.0 / size
    centre = rng.uniform(-0.06, 0.06, size=2)
    tilt = rng.uniform(-0.3, 0.3)
    # Axial heads are longer front to back (image rows) than side to side.
    half_height = rng.uniform(0.74, 0.88)
    half_width = half_height * rng.uniform(0.76, 0.86)
    x, y = _rotated_grid(size, centre, tilt)
    radius = np.hypot(x / half_width, y / half_height)
    head = radius <= 1.0

    # Gyri: sulci cut in from the brain's edge at a wandering angular rhythm, and the white
    # matter reaches out into each gyrus between them.
    gyrus_count = rng.integers(22, 30)
    gyral_phase = gyrus_count * np.arctan2(y / half_height, x / half_width)
    gyral_phase += 1.5 * _smooth_noise(rng, size, 0.12 / pixel) + rng.uniform(0, 2 * np.pi)
    from_sulcus = np.abs(np.angle(np.exp(1j * gyral_phase)))  # 0 on a sulcus, pi mid-gyrus
    cortex_edge = BRAIN_RADIUS + 0.012 * _smooth_noise(rng, size, 0.03 / pixel)
    # About a pixel wide at any image size (a phase of 1 rad spans this many pixels of cortex).
    pixels_per_phase = BRAIN_RADIUS * half_height / pixel / gyrus_count
    sulci = (from_sulcus < min(0.35, 0.6 / pixels_per_phase)) & (radius > cortex_edge - SULCUS_DEPTH)
    # The gray-matter ribbon wraps around each sulcus, so white matter retreats beneath it.
    white_edge = cortex_edge - CORTEX_THICKNESS - SULCUS_DEPTH * np.exp(-((from_sulcus / 1.2) ** 2))
    white = radius <= white_edge
    # The interhemispheric fissure reaches in from the front and back of the brain.
    fissure = (np.abs(x) < max(0.012, 0.6 * pixel)) & (np.abs(y / half_height) > 0.45)
    ventricles = _lateral_ventricles(rng, x / half_width, y / half_height)
    brain = (radius <= cortex_edge) & ~fissure & ~ventricles
    tissue = brain & ~sulci

    intensity = np.zeros((size, size))
    intensity[head] = SCALP
    intensity[radius < SCALP_INNER_RADIUS] = CSF
    intensity[tissue] = GRAY_MATTER
    intensity[tissue & white] = WHITE_MATTER
    # Fine tissue texture, then partial-volume blur so edges are not pixel-sharp.
    intensity[head] *= 1 + 0.05 * _smooth_noise(rng, size, 0.015 / pixel)[head]
    intensity = ndimage.gaussian_filter(intensity, sigma=max(0.6, 0.006 / pixel))
    return intensity, brain, head


def _lateral_ventricles(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two crescents close at the midline whose ends curve outwards: ")(", the lateral ventricles."""
    scale = rng.uniform(0.8, 1.3)  # ventricles widen with age and atrophy
    half_length, half_width, offset = 0.27 * scale, 0.055 * scale, 0.07 + 0.04 * scale
    bow, spread = rng.uniform(0.6, 1.2), rng.uniform(0.0, 0.2)
    ventricles = np.zeros(x.shape, dtype=bool)
    for side in (-1, 1):
        # Frontal horns lie close together; the back ends part, as the trigones do.
        angle = side * (spread + rng.uniform(-0.03, 0.03))
        along = (x - side * offset) * np.sin(angle) + (y - 0.04) * np.cos(angle)
        across = (x - side * offset) * np.cos(angle) - (y - 0.04) * np.sin(angle)
        across = across - side * bow * along**2  # ends curve away from the midline
        ventricles |= (along / half_length) ** 2 + (across / half_width) ** 2 <= 1
    return ventricles


def _draw_lesion(rng: np.random.Generator, brain: np.ndarray, irregular: bool) -> np.ndarray:
    """Lesion weight 0..1 per pixel (1 = all lesion), placed wholly inside the brain mask."""
    size = brain.shape[0]
    radius = max(MIN_LESION_RADIUS_PX, rng.uniform(0.04, 0.09) * size)  # in pixels
    # A lobulated outline: the radius varies with angle by a few low harmonics.
    harmonics = np.arange(2, 6)
    amplitudes = rng.uniform(0.1, 0.3, size=harmonics.size) / np.sqrt(harmonics)
    if not irregular:
        amplitudes[:] = 0
    phases = rng.uniform(0, 2 * np.pi, size=harmonics.size)

    def outline(angle: np.ndarray) -> np.ndarray:  # in lesion radii
        return 1 + (amplitudes * np.cos(np.multiply.outer(angle, harmonics) + phases)).sum(-1)

    reach = outline(np.linspace(0, 2 * np.pi, 360)).max() * (1 + LESION_EDGE)  # farthest extent
    room = ndimage.distance_transform_edt(brain)
    # Tiny images may lack room for the drawn size: shrink the lesion rather than leave the brain.
    radius = max(1.0, min(radius, (room.max() - LESION_CLEARANCE_PX) / reach))
    rows, cols = np.nonzero(room >= radius * reach + LESION_CLEARANCE_PX)
    if rows.size == 0:
        rows, cols = np.nonzero(room == room.max())
    pick = rng.integers(rows.size)
    row, col = np.mgrid[:size, :size]
    d_row, d_col = row - rows[pick], col - cols[pick]
    edge = radius * outline(np.arctan2(d_row, d_col))
    # 1 inside (1 - LESION_EDGE) * edge, 0 beyond (1 + LESION_EDGE) * edge, a smooth step between.
    t = np.clip(((1 + LESION_EDGE) * edge - np.hypot(d_row, d_col)) / (2 * LESION_EDGE * edge), 0, 1)
    return t * t * (3 - 2 * t)


def _scan(rng: np.random.Generator, intensity: np.ndarray) -> np.ndarray:
    """Coil bias field, receiver gain and Rician noise, as a magnitude image reconstructs them."""
    size = intensity.shape[0]
    x, y = _rotated_grid(size, np.zeros(2), 0.0)
    bias = 1 + rng.uniform(-0.12, 0.12) * x + rng.uniform(-0.12, 0.12) * y
    signal = intensity * bias * rng.uniform(0.7, 1.0)
    sigma = rng.uniform(0.01, 0.03)
    real = signal + rng.normal(0, sigma, signal.shape)
    imaginary = rng.normal(0, sigma, signal.shape)
    return np.clip(np.rint(np.hypot(real, imaginary) * 240), 0, 255).astype(np.uint8)


def _rotated_grid(size: int, centre: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in -1..1, shifted to centre (x, y) and rotated by angle radians."""
    axis = (np.arange(size) + 0.5) * (2.0 / size) - 1
    y, x = np.meshgrid(axis - centre[1], axis - centre[0], indexing="ij")
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")
    return field / field.std()
