"""Heads pinned on hand-built models whose correct maps are known exactly.

The toy model: a 2-channel 8 x 8 image goes through an identity 1 x 1 convolution (the CAM layer),
global average pooling and a head reading channel 0 minus channel 1. Channel 0 is 1 on the left
half, channel 1 is 0.5 on the right half, so the class score is s = 0.5 - 0.25 = 0.25 and its
gradient is +1/64 for channel 0 and -1/64 for channel 1 at every location: Grad-CAM of the class
the score favours is 1 on the left half and 0 on the right, the other class's the reverse.
"""

import numpy as np

from medray.explain import checks
from medray.explain.cam import CamExplainer
from medray.keras_setup import keras, tf

LEFT, RIGHT = (slice(None), slice(0, 4)), (slice(None), slice(4, 8))


def toy_image() -> np.ndarray:
    image = np.zeros((1, 8, 8, 2), np.float32)
    image[0, :, :4, 0] = 1.0
    image[0, :, 4:, 1] = 0.5
    return image


def toy_model(head: keras.layers.Layer, head_weights: list[np.ndarray]) -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    features = keras.layers.Conv2D(2, 1, use_bias=False, name="features")(inputs)
    outputs = head(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    head.set_weights(head_weights)
    return model


def half_map(on_left: bool) -> np.ndarray:
    expected = np.zeros((8, 8), np.float32)
    expected[LEFT if on_left else RIGHT] = 1.0
    return expected


def sigmoid_model() -> keras.Model:
    return toy_model(keras.layers.Dense(1, activation="sigmoid"), [np.array([[1.0], [-1.0]], np.float32),
                                                                  np.zeros(1, np.float32)])


def test_sigmoid_head_maps_for_the_predicted_and_the_other_class_are_exact_halves():
    explained = CamExplainer(sigmoid_model(), None, "gradcam")(toy_image(), np.array([[1, 0]]))
    maps = explained.maps[("gradcam", "features")][0]
    p = 1 / (1 + np.exp(-0.25))
    assert np.allclose(explained.probabilities, [[1 - p, p]], atol=1e-6)
    assert explained.probabilities.argmax() == 1
    assert np.allclose(maps[0], half_map(on_left=True), atol=1e-6)  # class 1, predicted: score s
    assert np.allclose(maps[1], half_map(on_left=False), atol=1e-6)  # class 0: score -s


def test_scorecam_on_a_sigmoid_head_weighs_channels_by_p_and_1_minus_p():
    explained = CamExplainer(sigmoid_model(), None, "scorecam")(toy_image(), np.array([[1, 0]]))
    maps = explained.maps[("scorecam", "features")][0]
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    # Masked by channel 0's map the input keeps its left half (s = 0.5), by channel 1's its right (s = -0.25).
    for slot, p in ((0, sigmoid(np.array([0.5, -0.25]))), (1, 1 - sigmoid(np.array([0.5, -0.25])))):
        weights = np.exp(p) / np.exp(p).sum()
        left, right = weights[0] * 1.0, weights[1] * 0.5
        assert np.allclose(maps[slot][LEFT], left / max(left, right), atol=1e-3)
        assert np.allclose(maps[slot][RIGHT], right / max(left, right), atol=1e-3)


def test_a_saturated_softmax_is_explained_from_its_score_without_changing_the_model():
    kernel = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], np.float32)
    model = toy_model(keras.layers.Dense(2, activation="softmax"), [kernel, np.zeros(2, np.float32)])
    image = tf.constant(toy_image())
    with tf.GradientTape() as tape:
        tape.watch(image)
        probability = model(image)[:, 0]
    assert probability.numpy()[0] == 1.0 and np.all(tape.gradient(probability, image).numpy() == 0)
    explained = CamExplainer(model, None, "gradcam")(toy_image())
    assert np.allclose(explained.maps[("gradcam", "features")][0, 0], half_map(on_left=True), atol=1e-6)
    assert model.layers[-1].get_config()["activation"] == "softmax"
    assert model.predict(toy_image(), verbose=0)[0, 0] == 1.0


def test_batch_norm_and_dropout_infer_so_a_map_does_not_depend_on_its_batch():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="features")(x)
    x = keras.layers.Dropout(0.5)(x, training=True)  # Monte Carlo dropout, as some notebooks build it
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.5)(x))
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.set_weights([np.full(6, 1.5, np.float32), np.full(6, 0.2, np.float32), np.full(6, 0.3, np.float32),
                    np.full(6, 2.0, np.float32)])
    images = np.random.default_rng(4).random((5, 16, 16, 1)).astype(np.float32) * 3
    explainer = CamExplainer(model, None, ["gradcam", "scorecam"], score_batch=16)
    alone, together = explainer(images[:1]), explainer(images)
    for key in alone.maps:
        assert np.allclose(alone.maps[key][0], together.maps[key][0], atol=1e-5)
    assert np.allclose(alone.probabilities[0], together.probabilities[0], atol=1e-6)


def test_a_classifier_wrapped_as_one_layer_is_explained_from_its_inner_score():
    # `outer = Model(inp, inner(inp))` puts preprocessing in front of a saved classifier: the outer
    # model's last call is the whole inner model, whose output is already a probability.
    heads = {
        "sigmoid": (lambda: keras.layers.Dense(1, activation="sigmoid"), [np.array([[1.0], [-1.0]], np.float32),
                                                                         np.zeros(1, np.float32)]),
        "softmax": (lambda: keras.layers.Dense(2, activation="softmax"),
                    [np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32), np.zeros(2, np.float32)]),
        "saturated softmax": (lambda: keras.layers.Dense(2, activation="softmax"),
                              [np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], np.float32), np.zeros(2, np.float32)]),
    }
    for name, (head, weights) in heads.items():
        inner = toy_model(head(), weights)
        inputs = keras.Input((8, 8, 2))
        outer = keras.Model(inputs, inner(inputs))
        for method in ("gradcam", "scorecam"):
            alone = CamExplainer(inner, None, method)(toy_image(), np.array([[0, 1]]))
            wrapped = CamExplainer(outer, None, method)(toy_image(), np.array([[0, 1]]))
            assert np.allclose(wrapped.probabilities, alone.probabilities, atol=1e-6), name
            (alone_maps,), (wrapped_maps,) = alone.maps.values(), wrapped.maps.values()
            assert np.allclose(wrapped_maps, alone_maps, atol=1e-5), (name, method)
            assert wrapped_maps.max() == 1.0, (name, method)  # not an empty map


def test_scorecam_on_a_saturated_output_that_no_mask_changes_is_flagged_empty_as_grad_cam_would_be():
    # A bias of 100 saturates the sigmoid: every channel-masked input scores p = 1 exactly, so
    # Score-CAM has no evidence and its softmax would weigh the channels equally (the mean activation,
    # the same map for either class) without a flag.
    model = toy_model(keras.layers.Dense(1, activation="sigmoid"), [np.array([[1.0], [-1.0]], np.float32),
                                                                    np.full(1, 100.0, np.float32)])
    explained = CamExplainer(model, None, "scorecam")(toy_image(), np.array([[1, 0]]))
    assert np.allclose(explained.probabilities, [[0.0, 1.0]])
    assert checks.is_empty(explained.maps[("scorecam", "features")][0]).all()
    informative = sigmoid_model()  # the same head unsaturated: its masked inputs differ, its maps are not empty
    assert not checks.is_empty(CamExplainer(informative, None, "scorecam")(toy_image(), np.array([[1, 0]]))
                               .maps[("scorecam", "features")][0]).any()
