"""ROC AUC of a binary score: the one definition used by the domain encoder's validation and the
downstream classifier test."""
import numpy as np


def auc(labels, scores):
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, ties given their average rank: the probability
    that a random positive scores above a random negative, a tie counting one half.

    labels: [N] (truthy = positive); scores: [N] numbers. NaN when one class is absent or a score is NaN."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"auc needs one score per label, got {labels.size} labels and {scores.size} scores")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(scores).any():
        return float("nan")
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)  # tie groups, ascending
    last = np.cumsum(counts)  # 1-based rank of the last member of each group
    ranks = (last - (counts - 1) / 2.0)[group]  # average rank of each score's group
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
