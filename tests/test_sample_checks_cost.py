"""What the sample's checks cost is bounded by the images they explain, whatever a map costs, and
the checks' randomised models are the ones their compiled functions read."""

import json

import numpy as np
import pytest

from medray.config import load_config
from medray.explain.cam import CamExplainer
from medray.explain.road import PERCENTILES
from medray.explain.sample_checks import RE_EXPLAIN_MAPS, RE_EXPLAIN_PASSES, RE_EXPLAINED, sample_checks
from medray.explain.scorecard import check_cost, format_cost
from medray.keras_setup import keras, tf
from medray.models.actor import UserModelSpec
from medray.models.preprocessing import DECLARED_PREPROCESSING, ModelInput
from medray.task import SingleLabelTask

from conftest import DEMO_CONFIG

# Images that went through the model, counted inside its graph (so every compiled call counts).
IMAGES_SEEN = tf.Variable(0, dtype=tf.int64, trainable=False)


@keras.utils.register_keras_serializable(package="medray_tests")
class CountImages(keras.layers.Layer):
    """The identity, adding the batch's size to IMAGES_SEEN each time the model runs."""

    def call(self, inputs):
        with tf.control_dependencies([IMAGES_SEEN.assign_add(tf.cast(tf.shape(inputs)[0], tf.int64))]):
            return tf.identity(inputs)


def counting_model(channels: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = CountImages(name="count")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))


def run_checks(tmp_path, channels: int, images: int, method: str):
    path = tmp_path / f"count{channels}.keras"
    counting_model(channels).save(path)
    explain = load_config(DEMO_CONFIG, [f"explain.method={method}"]).explain
    rows = {"row_id": np.array([f"r{i:02d}" for i in range(images)]),
            "pixels": np.random.default_rng(1).integers(0, 256, (images, 16, 16), np.uint8),
            "label": np.arange(images) % 2}
    IMAGES_SEEN.assign(0)
    table, steps, cost = sample_checks(path.read_bytes(),
                                       UserModelSpec(".keras", ModelInput(1, DECLARED_PREPROCESSING["unit"]), None),
                                       SingleLabelTask(("a", "b")), rows, explain)
    re_explained = json.loads(table.schema.metadata[RE_EXPLAINED.encode()])
    return table.to_pandas(), re_explained, cost, int(IMAGES_SEEN.numpy())


@pytest.mark.parametrize("images", [6, 12])
def test_score_cam_checks_send_at_most_a_few_maps_worth_of_images_through_the_model(tmp_path, images):
    # 128 channels: one Score-CAM map is 129 model passes; the old checks re-explained every image
    # 4 cascade steps + 6 augmentations = 10 times (11 x 129 passes an image in all).
    rows, re_explained, cost, seen = run_checks(tmp_path, 128, images, "scorecam")
    passes = 1 + 128
    assert re_explained["scorecam"]["re_explanations"] == 4 + 5  # 4 cascade steps, 5 augmentations
    road = 2 * len(PERCENTILES) * images * 2  # the map's and the random order's curves
    bound = images * passes + images * max(RE_EXPLAIN_PASSES, RE_EXPLAIN_MAPS * passes) + road
    assert seen <= bound + 2 * images  # + the eager passes that find the CAM layer
    re_explained = re_explained["scorecam"]
    assert re_explained["passes_per_map"] == passes and re_explained["sampled"] == images
    # The sub-sample is the budget over one image's re-explanations: 516 // 1161 of the images,
    # 2 of 6 and 5 of 12, not all of them.
    assert re_explained["images"] == {6: 2, 12: 5}[images]
    assert re_explained["images"] == images * max(RE_EXPLAIN_PASSES, RE_EXPLAIN_MAPS * passes) // ((4 + 5) * passes)
    # The figures that rest on the sub-sample count exactly its images, and the cost line says so.
    assert rows["map_spread"].notna().sum() == re_explained["images"]
    assert np.isfinite(np.stack(rows["cascade_rank_corr"].to_numpy())).all(axis=1).sum() == re_explained["images"]
    assert rows["road"].notna().sum() == images  # ROAD keeps every sampled image
    line = format_cost(check_cost(cost, "scorecam", len(rows), re_explained))
    assert f"re-explain {re_explained['images']} of {images} sampled images" in line


def test_a_gradient_method_re_explains_every_sampled_image(tmp_path):
    rows, re_explained, cost, seen = run_checks(tmp_path, 8, 6, "gradcam")
    assert re_explained["gradcam"]["images"] == 6
    assert rows["map_spread"].notna().all()
    assert np.isfinite(np.stack(rows["cascade_rank_corr"].to_numpy())).all()


def test_the_compiled_scores_follow_head_weights_re_assigned_in_place():
    model = counting_model(4)
    explainer = CamExplainer(model, "conv3", "gradcam")
    images = np.random.default_rng(0).random((3, 16, 16, 1)).astype(np.float32)
    before = explainer(images, np.zeros(3, np.int64)).maps[("gradcam", "conv3")]
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(2).normal(size=kernel.shape).astype(np.float32), bias + 1])
    # what the cascade's first step does: the re-initialised head, not the trained one, scores
    assert np.allclose(explainer.probabilities(images), model(images).numpy(), atol=1e-6)
    after = explainer(images, np.zeros(3, np.int64)).maps[("gradcam", "conv3")]
    assert not np.allclose(before, after)
