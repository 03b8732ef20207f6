"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS).

A map that explains what a model learnt must change when what it learnt is destroyed:
- model randomisation, as a cascade: the weights are re-initialised block by block from the top
  (the classification head) down to the input, and after every step the map is compared with the
  trained model's map of the same image and class;
- data randomisation: the same architecture trained on permuted labels, which can only memorise.

Similarity is measured as the paper does: Spearman's rank correlation and SSIM (structural
similarity). Rank correlation is taken at the CAM layer's own resolution (each value there is one
free number of the map; upsampling only interpolates between them), SSIM on the maps upsampled
to the image, as they are shown, since its 11-pixel windows need an image-sized picture.
"""

from __future__ import annotations

import re
from contextlib import nullcontext

import numpy as np

from medray.config import TrainConfig
from medray.explain.cam import explain_in_batches
from medray.explain.checks import is_empty, rank_correlation, upsample_maps
from medray.keras_setup import keras, tf
from medray.models.user_model import keras_of

RANDOMISATION_SEED = 2018
SSIM_WINDOW = 11  # tf.image.ssim's default, the paper's (Wang et al. 2004)
BLOCK_NUMBER = re.compile(r"\d+")


def randomised_copy(model: keras.Model) -> keras.Model:
    """The same architecture with every weight re-initialised. Its own seed: a model built after
    the common set_random_seed(0) would otherwise be re-drawn identically."""
    library = keras_of(model)  # a user's model may be a Keras 3 one
    library.utils.set_random_seed(RANDOMISATION_SEED)
    return library.models.clone_model(model)


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own weights, input to output, nested models flattened."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers += weighted_layers(layer)
        elif layer.weights:
            layers.append(layer)
    return layers


def cascade_blocks(model: keras.Model, max_steps: int) -> list[list[int]]:
    """Indices into `weighted_layers(model)` re-initialised at each cascade step, top block first.

    A block is a run of consecutive layers whose names carry the same number (conv2 and bn2;
    MobileNetV2's block_16_*); a layer without a number (the head) is a block of its own. With more
    blocks than `max_steps`, neighbouring blocks are merged into `max_steps` steps of similar size:
    the head alone first, the rest after it. `max_steps` 1 re-initialises the whole model in one
    step. Either way the last step leaves no trained weight, the model the verdict is judged on.
    """
    keys = [BLOCK_NUMBER.search(layer.name) for layer in weighted_layers(model)]
    blocks: list[list[int]] = []
    for index, key in enumerate(keys):
        previous = keys[index - 1] if index else None
        if key is not None and previous is not None and previous.group() == key.group():
            blocks[-1].append(index)
        else:
            blocks.append([index])
    blocks.reverse()
    if max_steps == 1:  # no room for the head alone: one point, every block at once
        return [[index for block in blocks for index in block]]
    if len(blocks) > max_steps:
        head, rest = blocks[:1], blocks[1:]  # the head stays the first point, as in the paper
        groups = np.array_split(np.arange(len(rest)), max_steps - 1)
        blocks = head + [[i for block in group for i in rest[block]] for group in groups if len(group)]
    return blocks


def block_names(model: keras.Model, blocks: list[list[int]]) -> list[str]:
    """Each step's layers as "lowest..highest" (or the one layer): the point's label in checks.png."""
    layers = weighted_layers(model)
    return [layers[block[0]].name if len(block) == 1 else f"{layers[min(block)].name}..{layers[max(block)].name}"
            for block in blocks]


def cascade_maps(model: keras.Model, random_model: keras.Model, explainers: dict, images: dict[str, np.ndarray],
                 targets: dict[str, np.ndarray], blocks: list[list[int]], batch_size: int = 64, timed=None
                 ) -> dict[str, list[dict]]:
    """Per method, maps ((method, layer) -> (n, T, h, w)) after each cumulative re-initialisation
    step, `batch_size` images at a time; `random_model`: `randomised_copy(model)`, whose weights
    each step copies.

    `explainers`: method -> CamExplainer of `model` itself; `images`, `targets`: method -> the
    (n, H, W, C) images and (n, T) classes that method re-explains. The weights are re-assigned in
    `model` (its compiled functions read the variables, so nothing is cloned or traced again per
    step or per method) and left re-initialised: restore them with `model.set_weights` if the
    trained model is needed afterwards. `timed(method)`: a context manager the method's maps of
    every step are timed in (medray.explain.sample_checks), or None."""
    random_layers = weighted_layers(random_model)
    layers = weighted_layers(model)
    steps: dict[str, list[dict]] = {method: [] for method in explainers}
    for block in blocks:
        for index in block:
            layers[index].set_weights(random_layers[index].get_weights())
        for method, explainer in explainers.items():
            with (timed(method) if timed is not None else nullcontext()):
                steps[method].append(explain_in_batches(explainer, images[method], targets[method], batch_size).maps)
    return steps


def label_randomised_model(model: keras.Model, images: np.ndarray, labels: np.ndarray, epochs: int,
                           batch_size: int, task) -> keras.Model:
    """The same architecture, re-initialised and trained with the task's loss (medray.task) on a
    seeded permutation of `labels` ((N,) class indices or (N, K) label vectors): `epochs` x
    ceil(N / batch_size) optimizer steps, N being the sample (at most explain.check_sample)."""
    permuted = np.random.default_rng(RANDOMISATION_SEED).permutation(labels)
    targets, _ = task.keras_targets(tf.constant(permuted, tf.int32), [])
    trained = randomised_copy(model)
    trained.compile(keras.optimizers.Adam(1e-3), task.loss(TrainConfig()))
    trained.fit(images, targets.numpy(), epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return trained


def structural_similarity(maps: np.ndarray, other: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """SSIM of each image's two maps ((N, h, w), values in [0, 1]) upsampled to `size`; for volumes
    ((N, d, h, w) to a (D, H, W) `size`) the mean SSIM of their axial slices."""
    first = upsample_maps(maps, size)
    second = upsample_maps(other, size)
    planes = [values.reshape(-1, *values.shape[-2:], 1) for values in (first, second)]
    window = min(SSIM_WINDOW, *size[-2:])
    ssim = tf.image.ssim(*planes, max_val=1.0, filter_size=window).numpy().astype(np.float64)
    return ssim.reshape(len(maps), -1).mean(axis=1)


def shared_structure_partners(labels: np.ndarray, seed: int = RANDOMISATION_SEED) -> np.ndarray:
    """For each image, another image of the same true class (any other image if it is alone in its
    class): pairs whose maps measure how alike maps are only through what all images share."""
    rng = np.random.default_rng(seed)
    partners = np.arange(len(labels))
    for label in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == label))
        if len(pool) > 1:
            partners[pool] = np.roll(pool, 1)  # a cyclic shift never pairs an image with itself
        elif len(labels) > 1:
            partners[pool] = rng.choice(np.flatnonzero(np.arange(len(labels)) != pool[0]))
    return partners


def map_similarity(maps: np.ndarray, other: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """{"rank_corr", "ssim"} per image. An empty (all-zero) map ranks nothing: its Spearman with a
    map that does rank pixels is 0, with another empty map 1 (the two are the same map)."""
    rank_corr = rank_correlation(maps, other)
    empty, other_empty = is_empty(maps), is_empty(other)
    rank_corr = np.where(empty & other_empty, 1.0, np.where(empty | other_empty, 0.0, rank_corr))
    return {"rank_corr": rank_corr, "ssim": structural_similarity(maps, other, size)}


# What each test does to the model, as the verdict rule and an unfinished verdict name it.
TEST_NAMES = {"model_randomisation": ("re-initialisation", "weights re-initialised"),
              "data_randomisation": ("label permutation", "labels permuted")}


def verdict_rule(ran: list[str]) -> str:
    """The rule for the tests that ran, and no other: "passed: after re-initialisation and after
    label permutation the map is less like ..."."""
    after = " and ".join(f"after {TEST_NAMES[test][0]}" for test in ran) or "after no test"
    rule = (f"passed: {after} the map is less like the trained map than the trained maps of two images of one "
            "class are, in median Spearman and SSIM")
    missing = [TEST_NAMES[test][0] for test in TEST_NAMES if test not in ran]
    return rule + (f"; {' and '.join(missing)} not run" if missing else "")


def sanity_verdict(tests: dict, reference: dict) -> dict:
    """{"verdicts": {test: "passed" | "FAILED" | None}, "verdict", "verdict_rule"}; a test without
    figures (None: not run) is left out of the verdict and its rule, and a pass names what it rests on.

    tests: {"model_randomisation" | "data_randomisation": {"rank_corr", "ssim": figure or None}};
    reference: the same figures for two different images' trained maps of one class.

    Why this threshold. Adebayo et al. ask whether a map depends on what the model learnt: if it
    barely changes when the weights are re-initialised, or when the model learnt permuted labels,
    it shows the input (they compare such methods to an edge detector), not the model. The paper
    reads its curves against zero similarity and gives no cut-off; zero is the wrong reference when
    every map of a dataset shares structure, which is so for CAMs of registered scans: all maps are
    zero outside the head, smooth at the CAM layer's resolution, and the maps of lesion-free slices
    cover the brain. Two trained maps of *different* images of one class share exactly that and
    nothing image-specific, so their similarity is what a map can score without knowing anything
    about its image. A randomised model's map that is no more like the trained map than that keeps
    none of what the trained model found in this image: the check passes. One that is more alike
    reproduces image-specific structure without the learnt weights or labels: it fails. The
    reference is measured on the same sample, for the same method, layer and classes, so the
    threshold moves with the data instead of being a constant tuned to one dataset.
    """
    verdicts = {}
    for test, figures in tests.items():
        if any(figures[name] is None or reference[name] is None for name in ("rank_corr", "ssim")):
            verdicts[test] = None
            continue
        below = all(figures[name]["value"] < reference[name]["value"] for name in ("rank_corr", "ssim"))
        verdicts[test] = "passed" if below else "FAILED"
    failed = [test.replace("_", " ") for test, verdict in verdicts.items() if verdict == "FAILED"]
    ran = [test for test, verdict in verdicts.items() if verdict is not None]
    verdict = None if not ran else ("passed" if not failed else f"FAILED ({', '.join(failed)})")
    skipped = [TEST_NAMES[test][1] for test in verdicts if test not in ran and test in TEST_NAMES]
    if verdict == "passed" and skipped:  # a pass rests only on the tests that ran
        verdict = f"passed ({', '.join(TEST_NAMES[test][1] for test in ran)} only; {', '.join(skipped)}: not run)"
    return {"verdicts": verdicts, "verdict": verdict, "verdict_rule": verdict_rule(ran)}
