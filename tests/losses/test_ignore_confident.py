"""The task-specific loss's online audit (``ignore_confident``) against a per-RoI computation in float64."""

import math

import pytest
import torch

from noisyseg.errors import NoisysegError
from noisyseg.losses import DEFAULT_LOG_ZERO, build_loss, task_specific_loss
from noisyseg.losses import foreground_loss_values


def direct_values(logits, labels, threshold, pon_threshold=None, log_zero=DEFAULT_LOG_ZERO):
    """Per-RoI loss, one RoI at a time from an explicit softmax, and the set each RoI fell in."""
    values, sets = [], []
    for z, y in zip(logits.double().tolist(), labels.tolist()):
        exp = [math.exp(v - max(z)) for v in z]
        p = [e / sum(exp) for e in exp]
        top = max(range(len(p)), key=lambda k: (p[k], -k))
        ce = -math.log(p[y])
        if y == 0 or top == 0:
            values.append(ce)
            sets.append("ce")
        elif pon_threshold is not None and ce > pon_threshold:
            values.append(0.0)
            sets.append("pon")
        elif threshold is not None and top != y and p[top] > threshold:
            values.append(-math.log(1.0 - p[0]))
            sets.append("ignored")
        else:
            values.append(-log_zero * (1.0 - p[y]))
            sets.append("os")
    return torch.tensor(values, dtype=torch.float64), sets


def crafted():
    """Logits (10, 4) and labels (10,) covering every case: NEG, PSN, OS confidently right, OS confidently
    contradicted (p = 0.97 and 0.93 on another class), OS contradicted without confidence (p ~ 0.6),
    a contradiction just below the threshold, and one whose CE is large enough for PON."""
    z = torch.tensor([
        [3.0, 0.0, 0.0, 0.0],    # NEG, label 0
        [4.0, 1.0, 0.0, 0.0],    # PSN: labelled 1, called background
        [0.0, 5.0, 0.0, 0.0],    # OS, right with confidence
        [0.0, 0.0, 6.0, 0.0],    # OS, label 1, model says 2 with p ~ 0.99
        [0.0, 0.5, 0.0, 4.0],    # OS, label 2, model says 3 with p ~ 0.93
        [0.0, 0.8, 1.2, 0.0],    # OS, label 1, model says 2 with p ~ 0.4
        [0.0, 0.0, 3.06, 0.0],   # OS, label 1, model says 2 with p ~ 0.87 (below 0.9)
        [0.0, 0.0, 0.0, 9.0],    # OS, label 1, model says 3 with CE ~ 9: PON when pon_threshold = 6
        [1.0, 0.0, 2.0, 0.0],    # OS, label 2, right, not confident
        [0.0, 7.0, 0.0, 0.0],    # OS, label 3, model says 1 with p ~ 0.997
    ], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1, 2, 1, 1, 1, 2, 3])
    return z, y


@pytest.mark.parametrize("threshold, pon_threshold", [(0.9, None), (0.5, None), (0.9, 6.0), (None, None)])
def test_values_match_the_direct_computation(threshold, pon_threshold):
    z, y = crafted()
    expected, sets = direct_values(z, y, threshold, pon_threshold)
    got, counts = task_specific_loss(z, y, ignore_confident=threshold, pon_threshold=pon_threshold,
                                     reduction="none", return_counts=True)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert task_specific_loss(z, y, ignore_confident=threshold, pon_threshold=pon_threshold).item() == \
        pytest.approx(expected.mean().item(), rel=1e-12)
    if threshold is None:
        assert "os_ignored" not in counts
    else:
        assert counts["os_ignored"].item() == sets.count("ignored")
        assert counts["os"].item() == sets.count("os") + sets.count("ignored")  # still counted in OS
    if (threshold, pon_threshold) == (0.9, None):
        assert sets == ["ce", "ce", "os", "ignored", "ignored", "os", "os", "ignored", "os", "ignored"]


def test_the_ignored_term_is_the_class_ignored_term_of_the_roi_heads():
    z, y = crafted()
    _, sets = direct_values(z, y, 0.9)
    got = task_specific_loss(z, y, ignore_confident=0.9, reduction="none")
    ignored = torch.tensor([s == "ignored" for s in sets])
    assert torch.allclose(got[ignored], foreground_loss_values(z[ignored]), rtol=1e-12, atol=1e-12)


def test_gradient_of_an_ignored_roi_only_says_object():
    """An ignored RoI's gradient on the object logits is proportional to their probabilities, so it does
    not move probability between object classes (its label gets no push)."""
    z, y = crafted()
    row = z[3:4].clone().requires_grad_(True)
    task_specific_loss(row, y[3:4], ignore_confident=0.9, reduction="sum").backward()
    p = torch.softmax(row.detach(), dim=1)[0]
    # F = -log(1 - p0): dF/dz_0 = p0, dF/dz_k = p_k (1 - 1/(1 - p0)) = -p_k p0 / (1 - p0)
    expected = torch.cat([p[:1], -p[1:] * p[0] / (1 - p[0])])
    assert torch.allclose(row.grad[0], expected, rtol=1e-10, atol=1e-14)


def test_the_registered_loss_and_its_parameter_checks():
    z, y = crafted()
    loss_fn = build_loss("lncis", ignore_confident=0.9)
    assert loss_fn.params["ignore_confident"] == 0.9
    loss, stats = loss_fn(z, y)
    expected, sets = direct_values(z, y, 0.9)
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-12)
    assert stats["os_ignored"].item() == sets.count("ignored") == 4
    assert build_loss("lncis").params["ignore_confident"] is None
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(NoisysegError, match=r"^loss lncis: ignore_confident must be in \(0, 1\) or None, got "):
            build_loss("lncis", ignore_confident=bad)
    for bad in ("high", True):
        with pytest.raises(NoisysegError, match=r"^loss lncis: ignore_confident must be a finite number, got "):
            build_loss("lncis", ignore_confident=bad)
