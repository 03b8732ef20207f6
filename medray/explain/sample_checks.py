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
`explain.batch_size` images, so memory is bounded by the batch and time grows linearly with the
sample (at most the images explained); the seconds each check took, per method, are returned.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from medray.explain import checks, road, sanity, uncertainty
from medray.explain.cam import CamExplainer, explain_in_batches
from medray.models.actor import ModelActor, UserModelSpec
from medray.task import Task

SAMPLE_CHECKS = "sample_checks.parquet"
SIMILARITIES = ("rank_corr", "ssim")
# Seeds of the random-order reference map and of ROAD's ties and imputation noise.
RANDOM_ORDER_SEED, ROAD_SEED = 29, 2022


@contextmanager
def timed(cost: dict, name: str, check: str):
    start = time.perf_counter()
    yield
    cost.setdefault(name, {})[check] = cost.get(name, {}).get(check, 0.0) + time.perf_counter() - start


def sample_checks(model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task, rows: dict, explain_config
                  ) -> tuple[pa.Table, list[str], dict]:
    """rows: the sample's decoded rows (row_id, pixels (N, H, W) uint8, label: (N,) or (N, K)).

    Returns one table row per map, the cascade's step names (the top layer of each block) and the
    cost: {method or "shared": {check: seconds}}."""
    loaded = ModelActor(model_bytes, backbone_name)  # medray's own model, or a user's (UserModelSpec)
    model = loaded.model
    images = loaded.model_input(rows["pixels"])
    labels = np.asarray(rows["label"], np.int64)
    count, size = len(images), images.shape[1:-1]  # (H, W), or a volume's (D, H, W)
    batch = explain_config.batch_size
    target = loaded.cam_target(task)
    methods = explain_config.methods
    cost: dict = {}
    # One explainer per method, so that each method's time is its own.
    explainers = {method: CamExplainer(model, loaded.cam_layers, [method], target=target) for method in methods}
    layers = explainers[methods[0]].layers
    slots = task.sample_slots(explain_config.target, labels)
    explained = {}
    for method, explainer in explainers.items():
        with timed(cost, method, "maps"):
            explained[method] = explain_in_batches(explainer, images, slots, batch)
    first = explained[methods[0]]
    targets, probabilities = first.targets, first.probabilities
    predict = explainers[methods[0]].probabilities
    blocks = sanity.cascade_blocks(model, explain_config.cascade_steps)
    cascade = {}
    for method in methods:
        with timed(cost, method, "cascade"):
            cascade[method] = sanity.cascade_maps(model, layers, [method], images, targets, blocks, batch)
    label_random = {}
    # Retraining needs the loss and head a model was trained with, which medray knows only for its own.
    if explain_config.label_randomisation_epochs and loaded.trained_by_medray:
        with timed(cost, "shared", "label-permuted model"):
            permuted_model = sanity.label_randomised_model(model, images, labels,
                                                           explain_config.label_randomisation_epochs, batch, task)
        for method in methods:
            with timed(cost, method, "label permutation"):
                label_random.update(explain_in_batches(CamExplainer(permuted_model, layers, [method], target=target),
                                                       images, targets, batch).maps)
    predictions = probabilities.argmax(axis=1)  # the top class or label
    groups = task.check_groups(labels, targets, predictions)
    # An image without labels (all -1) is grouped by what the model predicted, and the lines say so.
    labelled = labels.reshape(count, -1).max(axis=1) >= 0
    partners = sanity.shared_structure_partners(groups)
    random_order = {}
    with timed(cost, "shared", "ROAD, random order"):
        random_maps = np.random.default_rng(RANDOM_ORDER_SEED).random((count, *size))
        for slot in range(targets.shape[1]):
            morf, lerf = road.road_curves(images, random_maps, targets[:, slot], predict, seed=ROAD_SEED)
            random_order[slot] = road.road_score(morf, lerf)
    parts, augmented = [], {}
    for method in methods:
        for key, maps in explained[method].maps.items():
            for slot in range(targets.shape[1]):
                trained, slot_targets = maps[:, slot], targets[:, slot]
                upsampled = checks.upsample_maps(trained, size)
                with timed(cost, method, "ROAD"):
                    morf, lerf = road.road_curves(images, upsampled, slot_targets, predict, seed=ROAD_SEED)
                if (method, slot) not in augmented:
                    with timed(cost, method, "test-time augmentation"):
                        augmented[(method, slot)] = uncertainty.tta_uncertainty(explainers[method], images,
                                                                                slot_targets, batch)
                stability = augmented[(method, slot)][key]
                columns = {"row_id": np.asarray(rows["row_id"]).astype(str), "label": groups, "labelled": labelled,
                           "prediction": predictions, "target": slot_targets, "method": [key[0]] * count,
                           "layer": [key[1]] * count, "probability": probabilities[np.arange(count), slot_targets],
                           "road_morf": list(morf), "road_lerf": list(lerf), "road": road.road_score(morf, lerf),
                           "random_order_road": random_order[slot], "concentration": road.concentration(upsampled),
                           "correct": labelled & (groups == predictions), "entropy": stability["entropy"],
                           "map_spread": stability["map_spread"]}
                steps = [sanity.map_similarity(trained, step[key][:, slot], size) for step in cascade[method]]
                for name in SIMILARITIES:
                    columns[f"cascade_{name}"] = list(np.stack([step[name] for step in steps], axis=1))
                random_labels = (sanity.map_similarity(trained, label_random[key][:, slot], size) if label_random
                                 else {name: np.full(count, np.nan) for name in SIMILARITIES})
                shared = sanity.map_similarity(trained, trained[partners], size)
                for name in SIMILARITIES:
                    columns[f"label_random_{name}"] = random_labels[name]
                    columns[f"shared_{name}"] = shared[name]
                parts.append(pa.table(columns))
    return pa.concat_tables(parts), sanity.block_names(model, blocks), cost
