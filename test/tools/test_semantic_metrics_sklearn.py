"""Label-image metrics against scikit-learn's confusion_matrix, jaccard_score and accuracy_score.

Needs scikit-learn (requirements/test.txt); the same figures are also checked against a
per-pixel loop and scikit-image in test_semantic_metrics.py.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from lisa_ros.tools import semantic_metrics as sm


def test_figures_equal_scikit_learn():
    rng = np.random.default_rng(7)
    classes = 8
    truth = rng.integers(0, classes - 1, (60, 80))  # class 7 never in the truth
    predicted = np.where(rng.random(truth.shape) < 0.5, truth, rng.integers(0, classes, truth.shape))
    predicted[predicted == 3] = 2  # class 3 never predicted
    truth[rng.random(truth.shape) < 0.05] = sm.IGNORE_INDEX
    valid = truth != sm.IGNORE_INDEX
    y_true, y_pred = truth[valid], predicted[valid]

    matrix = sm.confusion_matrix(truth, predicted, classes)
    np.testing.assert_array_equal(matrix, confusion_matrix(y_true, y_pred, labels=range(classes)))
    scores = sm.scores_from_confusion(matrix)
    reference = jaccard_score(y_true, y_pred, labels=range(1, classes), average=None, zero_division=0)
    assert not np.isnan(scores.iou[1:]).any()  # every class is in the truth or predicted
    np.testing.assert_allclose(scores.iou[1:], reference)
    assert np.isclose(scores.miou, reference.mean())
    category = y_true > 0
    assert np.isclose(scores.pixel_accuracy, accuracy_score(y_true[category], y_pred[category]))
    support = np.bincount(y_true, minlength=classes)[1:]
    assert np.isclose(scores.fwiou, np.sum(support / support.sum() * reference))
    assert scores.never_predicted == ["3"] and scores.never_present == ["7"]
