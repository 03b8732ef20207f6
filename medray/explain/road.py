"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML), the faithfulness check of the sample.

Deletion curves that replace pixels by a blurred copy leak the removed region's shape, and a
blurred dark lesion stays dark, so the model can still see it. ROAD removes pixels by *noisy
linear imputation*: each removed pixel becomes the weighted mean of its eight neighbours (1/6 for
the four sides, 1/12 for the corners), solved jointly for all removed pixels as one sparse linear
system, plus a little noise, so the removal itself carries no shape. At fixed percentiles it then
reads the target's probability after removing the most relevant pixels first (MoRF, a faithful
map makes it fall) and the least relevant first (LeRF, a faithful map keeps it). The combined
score is (mean LeRF - mean MoRF) / 2 (pytorch-grad-cam's `ROADCombined`): higher is better, and a
map of random values scores about 0, which is the reference every figure is read against.

The probability is the task's (`medray.explain.targets`): softmax class, either side of one
sigmoid, or the sigmoid of label k, so the same check serves every task kind.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

# Five points of each curve: every imputation is a sparse solve and a forward pass, and with nine
# (pytorch-grad-cam's default) ROAD took 84 of the demo's 117 s of sample checks (5 Dec 2026).
PERCENTILES = (10, 30, 50, 70, 90)
# Noise added to imputed pixels, in units of the images' standard deviation (Rong et al.: 0.01 on
# standardised images).
NOISE = 0.01
# (row offset, column offset, weight) of the neighbours an imputed pixel is the weighted mean of.
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
              (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
# A volume's voxel: the mean of its six face neighbours.
VOLUME_NEIGHBOURS = tuple((*offset, 1 / 6) for axis in range(3) for step in (-1, 1)
                          for offset in [tuple(step if a == axis else 0 for a in range(3))])
# Images sent through the model in one call, and removed pixels imputed in one sparse solve.
PREDICT_BATCH = 256
SOLVE_PIXELS = 400_000


def noisy_linear_imputation(images: np.ndarray, removed: np.ndarray, noise: float = NOISE,
                            seed: int = 0) -> np.ndarray:
    """images: (N, H, W, C) float; removed: (N, H, W) bool -> (N, H, W, C) with every removed pixel
    the weighted mean of its neighbours (removed ones included: one linear system per image, all
    images' systems solved together as one block-diagonal sparse system), plus Gaussian noise of
    `noise` x the images' standard deviation. Each image must keep at least one pixel."""
    count, *grid, channels = images.shape
    pixels = int(np.prod(grid))
    flat_removed = np.asarray(removed, bool).reshape(-1)
    unknown = np.flatnonzero(flat_removed)
    result = np.array(images, np.float64).reshape(-1, channels)
    if unknown.size == 0:
        return result.reshape(images.shape).astype(images.dtype)
    if (np.asarray(removed).reshape(count, -1).all(axis=1)).any():
        raise ValueError("noisy_linear_imputation: an image has every pixel removed; keep at least one")
    variable = np.full(flat_removed.size, -1, np.int64)
    variable[unknown] = np.arange(unknown.size)
    image_of, within = np.divmod(unknown, pixels)
    position = np.unravel_index(within, grid)
    diagonal = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, channels))
    rows, cols, weights = [], [], []
    # A loop over the eight offsets; every pixel of every image is handled at once within each.
    for *offset, weight in (NEIGHBOURS if len(grid) == 2 else VOLUME_NEIGHBOURS):
        shifted = [axis + step for axis, step in zip(position, offset)]
        inside = np.flatnonzero(np.logical_and.reduce([(axis >= 0) & (axis < side) for axis, side in zip(shifted, grid)]))
        neighbour = image_of[inside] * pixels + np.ravel_multi_index([axis[inside] for axis in shifted], grid)
        diagonal[inside] += weight  # the weights of the neighbours that exist (fewer at the border)
        known = ~flat_removed[neighbour]
        rhs[inside[known]] += weight * result[neighbour[known]]
        rows.append(inside[~known])
        cols.append(variable[neighbour[~known]])
        weights.append(np.full(int((~known).sum()), -weight))
    system = sparse.coo_matrix((np.concatenate([diagonal, *weights]),
                                (np.concatenate([np.arange(unknown.size), *rows]),
                                 np.concatenate([np.arange(unknown.size), *cols]))),
                               shape=(unknown.size, unknown.size)).tocsc()
    solution = np.asarray(spsolve(system, rhs)).reshape(unknown.size, channels)
    scale = noise * float(np.std(images))
    solution += np.random.default_rng(seed).normal(0.0, 1.0, solution.shape) * scale
    result[unknown] = solution
    return result.reshape(images.shape).astype(images.dtype)


def removal_masks(maps: np.ndarray, percentiles=PERCENTILES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(MoRF, LeRF) masks, each (N, P, H, W) bool: at percentile p, the p % of pixels with the
    highest (MoRF) or lowest (LeRF) map values. Ties (flat regions, an empty map) are broken at random."""
    count, *grid = maps.shape
    pixels = int(np.prod(grid))
    tie_break = np.random.default_rng(seed).random((count, pixels))
    ranks = np.argsort(np.lexsort((tie_break, -maps.reshape(count, -1)), axis=-1), axis=1)  # 0: highest
    removed = np.rint(np.asarray(percentiles) / 100 * pixels).astype(np.int64)[np.newaxis, :, np.newaxis]
    morf = ranks[:, np.newaxis, :] < removed
    lerf = ranks[:, np.newaxis, :] >= pixels - removed
    return morf.reshape(count, -1, *grid), lerf.reshape(count, -1, *grid)


def road_curves(images: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                predict: Callable[[np.ndarray], np.ndarray], percentiles=PERCENTILES,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(MoRF, LeRF) probabilities of each image's target class, each (N, P).

    images: (N, H, W, C) model input; maps: (N, H, W) at the image's size; targets: (N,) classes
    or labels; predict: images -> (n, K) probabilities. Costs 2 P imputations and forward passes
    per image, a few images at a time so that memory stays at about PREDICT_BATCH images."""
    count, steps = len(images), len(percentiles)
    curves = np.empty((count, 2, steps))
    chunk = max(1, PREDICT_BATCH // (2 * steps))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        morf, lerf = removal_masks(maps[part], percentiles, seed=seed + start)
        size = len(morf)
        removed = np.concatenate([morf, lerf], axis=1).reshape(-1, *maps.shape[1:])  # (size * 2P, H, W)
        repeated = np.repeat(images[part], 2 * steps, axis=0)
        imputed = np.concatenate([
            noisy_linear_imputation(repeated[i:i + j], removed[i:i + j], seed=seed + start + i)
            for i, j in _solve_chunks(removed)])
        probabilities = np.concatenate([predict(imputed[i:i + PREDICT_BATCH])
                                        for i in range(0, len(imputed), PREDICT_BATCH)])
        chosen = np.repeat(np.asarray(targets[part], np.int64), 2 * steps)
        curves[part] = probabilities[np.arange(len(chosen)), chosen].reshape(size, 2, steps)
    return curves[:, 0], curves[:, 1]


def _solve_chunks(removed: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) runs of masks with at most SOLVE_PIXELS removed pixels together (at least one mask)."""
    sizes = removed.reshape(len(removed), -1).sum(axis=1)
    chunks, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > SOLVE_PIXELS:
            chunks.append((start, index - start))
            start, total = index, 0
        total += size
    chunks.append((start, len(sizes) - start))
    return chunks


def road_score(morf: np.ndarray, lerf: np.ndarray) -> np.ndarray:
    """The combined ROAD score per image, (mean LeRF - mean MoRF) / 2 over the percentiles, in
    [-0.5, 0.5]: positive when removing the map's most relevant pixels hurts more than removing its
    least relevant ones; about 0 for a map of random values."""
    return (lerf.mean(axis=1) - morf.mean(axis=1)) / 2


def concentration(maps: np.ndarray, share: float = 0.05) -> np.ndarray:
    """The share of each map's total value in its top `share` of pixels ((N, H, W) -> (N,)):
    `share` for a uniform map, near 1 for a map on one small region; 0 for an empty map, which
    points at nothing."""
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    top = max(1, int(round(share * flat.shape[1])))
    total = flat.sum(axis=1)
    highest = -np.partition(-flat, top - 1, axis=1)[:, :top]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, highest.sum(axis=1) / total, 0.0)
