"""The checks that cost extra forward passes or extra models, on the stratified sample only.

Per sampled image, method, CAM layer and target class:
- ROAD (Rong et al. 2022, `medray.explain.road`): the target's probability after removing the
  map's most relevant and least relevant pixels by noisy linear imputation, the combined score,
  and the same for a map of random values (one per image, shared by the methods);
- the map's concentration (its energy in its top 5 % of pixels), which tells a class whose
  maps point at a region from one whose maps are spread over the image;
- Adebayo et al.'s sanity checks (`medray.explain.sanity`): Spearman and SSIM between the trained
  model's map and the map after each step of the cascading re-initialisation, and the map of the
  same architecture trained on permuted labels;
- test-time augmentation (`medray.explain.uncertainty`): the predictive entropy across a flip and
  small shifts, and how far the map moves (its per-pixel standard deviation across them);
- the shared-structure reference: the same similarities between the trained model's maps of two
  different images of the same class, i.e. how alike two maps are through what all images share
  (anatomy, frame, upsampling) without any image-specific evidence.

It runs as one Ray task (on a GPU when the CAM actors get one): the sample is a few hundred images
and the label-randomised model is trained on all of them at once. Every model call takes at most
`explain.batch_size` images, so memory is bounded by the batch; the seconds each check took, per
method, are returned.

What the checks cost, per method, for a sample of n images, in model passes (one image through
the model; `CamExplainer.passes_per_map`: 1 for the gradient methods, 1 + the CAM layer's
channels for Score-CAM, 1 + IG_STEPS for Integrated Gradients):
- the maps of the sample, once: n x passes_per_map;
- ROAD: 2 x len(road.PERCENTILES) passes per image and target, whatever the method (and as many
  again for the random-order reference, once for all methods);
- the re-explaining checks: every cascade step, the label-permuted model and every test-time
  augmentation but the identity (whose maps are the sample's own) explain the images again, R
  times (R = cascade steps + 1 for the label-permuted model, where it runs, + 5). They get at most n x max(RE_EXPLAIN_PASSES, RE_EXPLAIN_MAPS x
  passes_per_map) passes: all n images for a gradient method (R passes each), a stratified
  sub-sample of m images for a method whose map costs many passes (MobileNetV2's Score-CAM: 1,281
  passes a map, 4 x 24 / 13 -> 7 of 24 images). So a method's checks cost at most about
  RE_EXPLAIN_MAPS + 1 times its own maps of the sample plus ROAD, linear in n. The figures that
  rest on the sub-sample (cascade, label permutation, test-time augmentation) count only its
  images (NaN elsewhere: their n is m), and the cost line of the console and summary says
  "... re-explain m of n sampled images R times (p model passes a map; a stratified sub-sample)".
  ROAD keeps every sampled image; its sparse solves, not the model, are most of its time.
The model is loaded once, and each method's compiled function is traced once: the cascade and
the label-permuted model re-assign the weights of the same model in place (after every check that
needs the trained weights has run), so no step, batch or method builds a new graph.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from medray.explain import checks, road, sanity, uncertainty
from medray.explain.cam import CamBatch, CamExplainer, explain_in_batches
from medray.explain.sample import stratified_sample
from medray.models.actor import ModelActor, UserModelSpec
from medray.task import Task

SAMPLE_CHECKS = "sample_checks.parquet"
SIMILARITIES = ("rank_corr", "ssim")
# Seeds of the random-order reference map and of ROAD's ties and imputation noise.
RANDOM_ORDER_SEED, ROAD_SEED = 29, 2022
# The re-explaining checks of one method may send at most n x max(RE_EXPLAIN_PASSES,
# RE_EXPLAIN_MAPS x passes_per_map) images through the model: a gradient method (1 pass a map,
# 14 re-explanations) re-explains every sampled image; Score-CAM on 1,280 channels re-explains a
# sub-sample, so that its checks cost about four times its maps (5 Dec 2026: MobileNetV2 at 96 px,
# 24 images, gradcam + scorecam: the checks still running after 480 s, 13 x the Score-CAM maps).
RE_EXPLAIN_PASSES = 256
RE_EXPLAIN_MAPS = 4
SUBSAMPLE_SEED = 33
# The schema metadata key of what each method's re-explaining checks ran on.
RE_EXPLAINED = "re_explained"


@contextmanager
def timed(cost: dict, name: str, check: str):
    start = time.perf_counter()
    yield
    cost.setdefault(name, {})[check] = cost.get(name, {}).get(check, 0.0) + time.perf_counter() - start


def re_explained_images(passes_per_map: int, re_explanations: int, row_ids: np.ndarray, groups: np.ndarray,
                        predictions: np.ndarray) -> np.ndarray:
    """Indices (sorted) of the sampled images a method's re-explaining checks run on: all n when
    `re_explanations` x `passes_per_map` fits in max(RE_EXPLAIN_PASSES, RE_EXPLAIN_MAPS x
    passes_per_map) passes per image, else a sub-sample of m = floor(n x that budget /
    (re_explanations x passes_per_map)) images (at least 1), stratified like the sample itself (by
    class and by correct prediction, medray.explain.sample) and seeded."""
    count = len(row_ids)
    budget = count * max(RE_EXPLAIN_PASSES, RE_EXPLAIN_MAPS * passes_per_map)
    wanted = min(count, max(1, budget // max(1, re_explanations * passes_per_map)))
    if wanted == count:
        return np.arange(count)
    chosen = stratified_sample(row_ids, groups, predictions, wanted, SUBSAMPLE_SEED)
    return np.flatnonzero(np.isin(row_ids, list(chosen)))


def sample_checks(model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task, rows: dict, explain_config
                  ) -> tuple[pa.Table, list[str], dict]:
    """rows: the sample's decoded rows (row_id, pixels (N, H, W) uint8, label: (N,) or (N, K)).

    Returns one table row per map, the cascade's step names (the top layer of each block) and the
    cost: {method or "shared": {check: seconds}}. The table's schema metadata RE_EXPLAINED holds,
    as JSON, {method: {"images": m, "sampled": n, "passes_per_map": p, "re_explanations": R,
    "budget_maps": RE_EXPLAIN_MAPS, "checks": the re-explaining checks that ran}}."""
    loaded = ModelActor(model_bytes, backbone_name)  # medray's own model, or a user's (UserModelSpec)
    model = loaded.model
    images = loaded.model_input(rows["pixels"])
    labels = np.asarray(rows["label"], np.int64)
    row_ids = np.asarray(rows["row_id"]).astype(str)
    count, size = len(images), images.shape[1:-1]  # (H, W), or a volume's (D, H, W)
    batch = explain_config.batch_size
    target = loaded.cam_target(task)
    methods = explain_config.methods
    cost: dict = {}
    # One explainer per method, so that each method's time is its own; each is traced once and
    # serves every check, the cascade's and the label-permuted model's weights included.
    explainers = {method: CamExplainer(model, loaded.cam_layers, [method], target=target) for method in methods}
    slots = task.sample_slots(explain_config.target, labels)
    explained = {}
    for method, explainer in explainers.items():
        with timed(cost, method, "maps"):
            explained[method] = explain_in_batches(explainer, images, slots, batch)
    first = explained[methods[0]]
    targets, probabilities = first.targets, first.probabilities
    predict = explainers[methods[0]].probabilities
    predictions = probabilities.argmax(axis=1)  # the top class or label
    groups = task.check_groups(labels, targets, predictions)
    # An image without labels (all -1) is grouped by what the model predicted, and the lines say so.
    labelled = labels.reshape(count, -1).max(axis=1) >= 0
    partners = sanity.shared_structure_partners(groups)
    blocks = sanity.cascade_blocks(model, explain_config.cascade_steps)
    # Retraining needs the loss and head a model was trained with, which medray knows only for its own.
    permute = bool(explain_config.label_randomisation_epochs and loaded.trained_by_medray)
    re_explanations = len(blocks) + permute + len(uncertainty.augmentations(size)) - 1
    chosen = {method: re_explained_images(explainer.passes_per_map, re_explanations, row_ids, groups, predictions)
              for method, explainer in explainers.items()}
    re_explained = {method: {"images": int(len(chosen[method])), "sampled": int(count),
                                     "passes_per_map": int(explainers[method].passes_per_map),
                                     "re_explanations": int(re_explanations), "budget_maps": RE_EXPLAIN_MAPS,
                                     "checks": ["cascade", *(["label permutation"] if permute else []),
                                                "test-time augmentation"]}
                          for method in methods}

    # Every check of the trained model first (the cascade then re-assigns its weights).
    random_order = {}
    with timed(cost, "shared", "ROAD, random order"):
        random_maps = np.random.default_rng(RANDOM_ORDER_SEED).random((count, *size))
        for slot in range(targets.shape[1]):
            morf, lerf = road.road_curves(images, random_maps, targets[:, slot], predict, seed=ROAD_SEED)
            random_order[slot] = road.road_score(morf, lerf)
    curves = {}
    for method in methods:
        for key, maps in explained[method].maps.items():
            for slot in range(targets.shape[1]):
                with timed(cost, method, "ROAD"):
                    curves[(key, slot)] = road.road_curves(images, checks.upsample_maps(maps[:, slot], size),
                                                           targets[:, slot], predict, seed=ROAD_SEED)
    augmented = {}
    for method in methods:
        subset = chosen[method]
        for slot in range(targets.shape[1]):
            identity = CamBatch({key: maps[subset, slot:slot + 1] for key, maps in explained[method].maps.items()},
                                targets[subset, slot:slot + 1], probabilities[subset])
            with timed(cost, method, "test-time augmentation"):
                augmented[(method, slot)] = uncertainty.tta_uncertainty(
                    explainers[method], images[subset], targets[subset, slot], batch, identity=identity)

    # The randomised models: the same model and compiled functions, weights re-assigned in place.
    trained_weights = model.get_weights()
    subset_images = {method: images[chosen[method]] for method in methods}
    subset_targets = {method: targets[chosen[method]] for method in methods}
    with timed(cost, "shared", "randomised copy"):
        random_model = sanity.randomised_copy(model)
    cascade = sanity.cascade_maps(model, random_model, explainers, subset_images, subset_targets, blocks, batch,
                                  timed=lambda method: timed(cost, method, "cascade"))
    label_random: dict = {}
    if permute:
        model.set_weights(trained_weights)
        with timed(cost, "shared", "label-permuted model"):
            permuted_model = sanity.label_randomised_model(model, images, labels,
                                                           explain_config.label_randomisation_epochs, batch, task)
            model.set_weights(permuted_model.get_weights())
        for method in methods:
            with timed(cost, method, "label permutation"):
                label_random[method] = explain_in_batches(explainers[method], subset_images[method],
                                                          subset_targets[method], batch).maps
    model.set_weights(trained_weights)

    parts = []
    for method in methods:
        subset = chosen[method]
        for key, maps in explained[method].maps.items():
            for slot in range(targets.shape[1]):
                trained, slot_targets = maps[:, slot], targets[:, slot]
                morf, lerf = curves[(key, slot)]
                stability = augmented[(method, slot)][key]
                columns = {"row_id": row_ids, "label": groups, "labelled": labelled,
                           "prediction": predictions, "target": slot_targets, "method": [key[0]] * count,
                           "layer": [key[1]] * count, "probability": probabilities[np.arange(count), slot_targets],
                           "road_morf": list(morf), "road_lerf": list(lerf), "road": road.road_score(morf, lerf),
                           "random_order_road": random_order[slot],
                           "concentration": road.concentration(checks.upsample_maps(trained, size)),
                           "correct": labelled & (groups == predictions),
                           "entropy": _spread_out(stability["entropy"], subset, count),
                           "map_spread": _spread_out(stability["map_spread"], subset, count)}
                steps = [sanity.map_similarity(trained[subset], step[key][:, slot], size) for step in cascade[method]]
                for name in SIMILARITIES:
                    columns[f"cascade_{name}"] = list(np.stack([_spread_out(step[name], subset, count)
                                                                for step in steps], axis=1))
                random_labels = (sanity.map_similarity(trained[subset], label_random[method][key][:, slot], size)
                                 if label_random else {name: np.full(len(subset), np.nan) for name in SIMILARITIES})
                shared = sanity.map_similarity(trained, trained[partners], size)
                for name in SIMILARITIES:
                    columns[f"label_random_{name}"] = _spread_out(random_labels[name], subset, count)
                    columns[f"shared_{name}"] = shared[name]
                parts.append(pa.table(columns))
    table = pa.concat_tables(parts).replace_schema_metadata({RE_EXPLAINED: json.dumps(re_explained)})
    return table, sanity.block_names(model, blocks), cost


def _spread_out(values: np.ndarray, subset: np.ndarray, count: int) -> np.ndarray:
    """(m,) values of the sub-sample's images -> (count,), NaN for the images it left out."""
    result = np.full(count, np.nan)
    result[subset] = values
    return result
