"""The loss formulas (DESIGN.md §1, GOOD) computed directly in float64 numpy, independent of noisyseg.losses.

The single reference the loss tests compare against: explicit softmax and one-hot labels, and a plain
loop over RoIs for the partition losses (task-specific, GOOD).
"""

import numpy as np

A = np.log(1e-4)
GOOD_RAMP = (0.0, -0.001, -0.005, -0.01, -0.05, -0.1)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def one_hot(y, classes):
    return np.eye(classes)[np.asarray(y)]


def ce(z, y):
    p = softmax(z)
    return -(one_hot(y, p.shape[1]) * np.log(p)).sum(axis=1)


def label_smoothed_ce(z, y, epsilon=0.1):
    """-sum_c t[c] log p[c], the target built explicitly: background one-hot; an object label keeps
    1 - epsilon and every object class (the label's own included) gets epsilon / K; background gets 0."""
    p = softmax(z)
    classes = p.shape[1]
    t = one_hot(y, classes)
    objects = np.asarray(y) > 0
    t[objects] *= 1.0 - epsilon
    t[objects, 1:] += epsilon / (classes - 1)
    return -(t * np.log(p)).sum(axis=1)


def rce(z, y, log_zero=A):
    p = softmax(z)
    log_q = np.where(one_hot(y, p.shape[1]) > 0, 0.0, log_zero)  # log of one-hot, log 0 replaced by A
    return -(p * log_q).sum(axis=1)


def sce(z, y, alpha=1.0, beta=0.1, log_zero=A):
    return alpha * ce(z, y) + beta * rce(z, y, log_zero)


def gce(z, y, q=0.3):
    p_y = (softmax(z) * one_hot(y, np.shape(z)[1])).sum(axis=1)
    return (1.0 - p_y ** q) / q


def apl(z, y, alpha=1.0, beta=1.0, log_zero=A):
    nce = ce(z, y) / -np.log(softmax(z)).sum(axis=1)
    return alpha * nce + beta * rce(z, y, log_zero)


ROBUST = {"rce": rce, "sce": sce, "gce": gce, "apl": apl}


def task_specific(z, y, robust="rce", ce_weight=1.0, robust_weight=1.0, pon_threshold=None, log_zero=A,
                  **robust_kwargs):
    """Per-RoI values (N,) and the set name ("neg", "psn", "pon", "os") of every RoI, one RoI at a time."""
    p = softmax(z)
    c = ce(z, y)
    shared = {} if robust == "gce" else {"log_zero": log_zero}  # GCE has no log 0 to replace
    r = ROBUST[robust](z, y, **robust_kwargs, **shared)
    values, sets = [], []
    for i, label in enumerate(np.asarray(y)):
        if label == 0:
            name, value = "neg", ce_weight * c[i]
        elif int(np.argmax(p[i])) == 0:
            name, value = "psn", ce_weight * c[i]
        elif pon_threshold is not None and c[i] > pon_threshold:
            name, value = "pon", 0.0
        else:
            name, value = "os", robust_weight * r[i]
        sets.append(name)
        values.append(value)
    return np.array(values), sets


def clipped_ce(p_y, tau=10.0):
    """-ln p above 1/tau, -tau p + ln tau + 1 at and below it."""
    return np.where(p_y <= 1.0 / tau, -tau * p_y + np.log(tau) + 1.0, -np.log(p_y))


def good(z, y, robust_epoch=0, pon_threshold=6.0, ascent_weights=GOOD_RAMP, tau=10.0, clipped_ce_weight=0.01,
         log_zero=A, ascent_min_prob=1e-7):
    """GOOD's per-RoI values (N,) and set names, one RoI at a time."""
    p = softmax(z)
    c = ce(z, y)
    r = rce(z, y, log_zero)
    weight = ascent_weights[min(robust_epoch, len(ascent_weights) - 1)]
    values, sets = [], []
    for i, label in enumerate(np.asarray(y)):
        if label == 0:
            name, value = "neg", c[i]
        elif int(np.argmax(p[i])) == 0:
            name, value = "psn", c[i]
        elif pon_threshold is not None and c[i] > pon_threshold:
            name, value = "pon", weight * min(c[i], -np.log(ascent_min_prob))
        else:
            name, value = "os", r[i] + clipped_ce_weight * clipped_ce(p[i, label], tau)
        sets.append(name)
        values.append(value)
    return np.array(values), sets
