"""The checks that cost extra forward passes or extra models, on the stratified sample only.

Per sampled image, method, CAM layer and target class:
- deletion and insertion AUC in the map's order and in random order (Petsiuk et al. 2018);
- Adebayo et al.'s sanity checks (`medray.explain.sanity`): Spearman and SSIM between the trained
  model's map and the map after each step of the cascading re-initialisation, and the map of the
  same architecture trained on permuted labels;
- the shared-structure reference: the same similarities between the trained model's maps of two
  different images of the same class, i.e. how alike two maps are through what all images share
  (anatomy, frame, upsampling) without any image-specific evidence.

It runs as one Ray task (on a GPU when the CAM actors get one): the sample is a few hundred images
and the label-randomised model is trained on all of them at once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from medray.explain import checks, sanity
from medray.explain.cam import CamExplainer
from medray.models.actor import ModelActor, UserModelSpec
from medray.task import Task

SAMPLE_CHECKS = "sample_checks.parquet"
SIMILARITIES = ("rank_corr", "ssim")


def sample_checks(model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task, rows: dict, explain_config
                  ) -> tuple[pa.Table, list[str]]:
    """rows: the sample's decoded rows (row_id, pixels (N, H, W) uint8, label: (N,) or (N, K)).

    Returns one table row per map and the cascade's step names (the top layer of each block)."""
    loaded = ModelActor(model_bytes, backbone_name)  # medray's own model, or a user's (UserModelSpec)
    model = loaded.model
    images = loaded.model_input(rows["pixels"])
    labels = np.asarray(rows["label"], np.int64)
    count, size = len(images), images.shape[1:-1]  # (H, W), or a volume's (D, H, W)
    target = loaded.cam_target(task)
    explainer = CamExplainer(model, loaded.cam_layers, explain_config.methods, target=target)
    layers = explainer.layers
    explained = explainer(images, task.sample_slots(explain_config.target, labels))
    blocks = sanity.cascade_blocks(model, explain_config.cascade_steps)
    cascade = sanity.cascade_maps(model, layers, explain_config.methods, images, explained.targets,
                                  blocks)
    label_random = None
    # Retraining needs the loss and head a model was trained with, which medray knows only for its own.
    if explain_config.label_randomisation_epochs and loaded.trained_by_medray:
        permuted_model = sanity.label_randomised_model(model, images, labels, explain_config.label_randomisation_epochs,
                                                       explain_config.batch_size, task)
        label_random = CamExplainer(permuted_model, layers, explain_config.methods, target=target)(
            images, explained.targets).maps
    predictions = explained.probabilities.argmax(axis=1)  # the top class or label
    groups = task.check_groups(labels, explained.targets, predictions)
    # An image without labels (all -1) is grouped by what the model predicted, and the lines say so.
    labelled = labels.reshape(count, -1).max(axis=1) >= 0
    partners = sanity.shared_structure_partners(groups)
    # The blurred images and the curves' end points are the same for every map of an image.
    baseline = checks.faithfulness_baseline(images, explainer.probabilities)
    parts = []
    for key, maps in explained.maps.items():
        for slot in range(explained.targets.shape[1]):
            trained, slot_targets = maps[:, slot], explained.targets[:, slot]
            upsampled = checks.upsample_maps(trained, size)
            columns = {"row_id": np.asarray(rows["row_id"]).astype(str), "label": groups, "labelled": labelled,
                       "prediction": predictions,
                       "target": slot_targets, "method": [key[0]] * count, "layer": [key[1]] * count}
            for order, prefix in (("map", ""), ("random", "random_order_")):
                deletion, insertion = checks.deletion_insertion_auc(images, upsampled, slot_targets,
                                                                    explainer.probabilities,
                                                                    explain_config.deletion_steps, order=order,
                                                                    baseline=baseline)
                columns[f"{prefix}deletion_auc"], columns[f"{prefix}insertion_auc"] = deletion, insertion
            steps = [sanity.map_similarity(trained, step[key][:, slot], size) for step in cascade]
            for name in SIMILARITIES:
                columns[f"cascade_{name}"] = list(np.stack([step[name] for step in steps], axis=1))
            random_labels = (sanity.map_similarity(trained, label_random[key][:, slot], size) if label_random
                             else {name: np.full(count, np.nan) for name in SIMILARITIES})
            shared = sanity.map_similarity(trained, trained[partners], size)
            for name in SIMILARITIES:
                columns[f"label_random_{name}"] = random_labels[name]
                columns[f"shared_{name}"] = shared[name]
            parts.append(pa.table(columns))
    return pa.concat_tables(parts), sanity.block_names(model, blocks)
