"""The sample the expensive checks run on: stratified by true class and by correct/incorrect
prediction, every stratum in proportion, and the same rows for the same seed whatever the order."""

import numpy as np

from medray.explain.sample import StratifiedSampler, stratified_sample


def predictions_table(rows=2000, seed=0):
    """Three classes of 60/25/15 %, with 10 %, 30 % and 50 % of each class misclassified."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=rows, p=[0.6, 0.25, 0.15])
    wrong = rng.random(rows) < np.array([0.1, 0.3, 0.5])[labels]
    predictions = np.where(wrong, (labels + 1) % 3, labels)
    return np.array([f"img-{i:05d}" for i in range(rows)]), labels, predictions


def test_every_stratum_is_represented_in_proportion_to_its_size():
    row_ids, labels, predictions = predictions_table()
    sample = stratified_sample(row_ids, labels, predictions, size=300, seed=7)
    assert len(sample) == 300
    index = {row_id: i for i, row_id in enumerate(row_ids)}
    for label in range(3):
        for correct in (True, False):
            in_stratum = (labels == label) & ((labels == predictions) == correct)
            drawn = sum(1 for row_id in sample if in_stratum[index[row_id]])
            assert drawn >= 1 and abs(drawn - 300 * in_stratum.mean()) <= 1  # largest remainder: within one
            assert all(sample[row_id] == (label, correct) for row_id in sample if in_stratum[index[row_id]])


def test_the_same_seed_draws_the_same_rows_in_any_order_and_batching():
    row_ids, labels, predictions = predictions_table()
    first = stratified_sample(row_ids, labels, predictions, size=200, seed=3)
    order = np.random.default_rng(1).permutation(len(row_ids))
    streamed = StratifiedSampler(200, seed=3)
    for chunk in np.array_split(order, 17):
        streamed.add(row_ids[chunk], labels[chunk], predictions[chunk])
    assert streamed.draw() == first
    other_seed = stratified_sample(row_ids, labels, predictions, size=200, seed=4)
    assert set(other_seed) != set(first) and len(other_seed) == 200


def test_a_tiny_stratum_is_kept_and_a_sample_larger_than_the_images_takes_them_all():
    row_ids = np.array(["a", "b", "c", "d", "e"])
    labels, predictions = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 0, 0, 0])
    assert set(stratified_sample(row_ids, labels, predictions, size=2, seed=0).values()) == {(0, True), (1, False)}
    assert set(stratified_sample(row_ids, labels, predictions, size=50, seed=0)) == set(row_ids)
