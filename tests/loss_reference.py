"""Direct float64 numpy computations of the DESIGN.md §1 formulas, independent of noisyseg.losses."""

import numpy as np

A = np.log(1e-4)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce(z, y):
    p = softmax(z)
    return -np.log(p[np.arange(len(y)), y])


def rce(z, y, log_zero=A):
    p = softmax(z)
    logq = np.where(np.eye(p.shape[1])[y] == 1, 0.0, log_zero)  # log of one-hot, log 0 replaced by A
    return -(p * logq).sum(axis=1)


def sce(z, y, alpha=1.0, beta=0.1, log_zero=A):
    return alpha * ce(z, y) + beta * rce(z, y, log_zero)


def gce(z, y, q=0.3):
    p = softmax(z)
    return (1 - p[np.arange(len(y)), y] ** q) / q


def apl(z, y, alpha=1.0, beta=1.0, log_zero=A):
    p = softmax(z)
    nce = -np.log(p[np.arange(len(y)), y]) / (-np.log(p)).sum(axis=1)
    return alpha * nce + beta * rce(z, y, log_zero)


def task_specific(z, y, robust=rce, ce_weight=1.0, robust_weight=1.0, pon=None):
    """Per-RoI values and the set each RoI falls in, by a plain loop over RoIs."""
    p = softmax(z)
    c = ce(z, y)
    r = robust(z, y)
    values, sets = [], []
    for i in range(len(y)):
        if y[i] == 0:
            values.append(ce_weight * c[i]); sets.append("neg")
        elif np.argmax(p[i]) == 0:
            values.append(ce_weight * c[i]); sets.append("psn")
        elif pon is not None and c[i] > pon:
            values.append(0.0); sets.append("pon")
        else:
            values.append(robust_weight * r[i]); sets.append("os")
    return np.array(values), sets
