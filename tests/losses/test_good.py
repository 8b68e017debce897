"""GOOD (gradient_optimization_loss): its partition, each set's term, the per-epoch ascent ramp, the clip."""

import math

import numpy as np
import pytest
import torch

import loss_reference as ref
from noisyseg.errors import NoisysegError
from noisyseg.losses import GOOD_ASCENT_WEIGHTS, gradient_optimization_loss

A = math.log(1e-4)


def as_ints(counts):
    return {k: int(v) for k, v in counts.items()}


def crafted():
    """Seven RoIs, K = 3: NEG, PSN, PSN by a tie, OS with p > 1/tau, OS with p <= 1/tau, two PON (CE > 6)."""
    logits = torch.tensor([
        [4.0, 0.0, 0.0, 0.0],      # y=0                                   -> NEG
        [5.0, 1.0, 0.0, 0.0],      # y=2, model says background            -> PSN
        [2.0, 2.0, 0.0, 0.0],      # y=1, background ties class 1          -> PSN
        [0.0, 4.0, 0.0, 0.0],      # y=1, model agrees (p ~ 0.95)          -> OS, CE branch of the clip
        [0.0, 1.0, 4.0, 0.0],      # y=1, p ~ 0.047 <= 1/10 (CE ~ 3.06)    -> OS, linear branch of the clip
        [0.0, 9.0, 0.0, -1.0],     # y=3, CE ~ 10                          -> PON
        [0.0, 30.0, 0.0, -1.0],    # y=3, CE ~ 31 > -ln 1e-7 ~ 16.1        -> PON, past the ascent cap
    ], dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 1, 3, 3])
    return logits, labels


SETS = ["neg", "psn", "psn", "os", "os", "pon", "pon"]


@pytest.mark.parametrize("robust_epoch", [0, 1, 3, 5, 9])
def test_each_crafted_roi_gets_the_term_of_its_set(robust_epoch):
    z, y = crafted()
    expected, sets = ref.good(z.numpy(), y.numpy(), robust_epoch=robust_epoch)
    assert sets == SETS
    values, counts = gradient_optimization_loss(z, y, robust_epoch=robust_epoch, reduction="none",
                                                return_counts=True)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert as_ints(counts) == {"neg": 1, "psn": 2, "os": 2, "pon": 2}
    ce = -torch.log_softmax(z, dim=1)[torch.arange(7), y]
    torch.testing.assert_close(values[:3], ce[:3])  # NEG and PSN: plain CE
    weight = GOOD_ASCENT_WEIGHTS[min(robust_epoch, 5)]
    torch.testing.assert_close(values[5], weight * ce[5])
    torch.testing.assert_close(values[6], torch.tensor(weight * -math.log(1e-7), dtype=torch.float64))
    p_y = torch.softmax(z, dim=1)[torch.arange(7), y]
    assert p_y[3] > 0.1 and p_y[4] <= 0.1
    torch.testing.assert_close(values[3], -A * (1 - p_y[3]) + 0.01 * ce[3])
    torch.testing.assert_close(values[4], -A * (1 - p_y[4]) + 0.01 * (-10 * p_y[4] + math.log(10) + 1))


def test_the_ascent_weight_follows_the_ramp_and_holds_its_last_value():
    z, y = crafted()
    ce_pon = -torch.log_softmax(z, dim=1)[5, 3]
    got = [gradient_optimization_loss(z, y, robust_epoch=e, reduction="none")[5].item() for e in range(9)]
    expected = [w * ce_pon.item() for w in (0.0, -0.001, -0.005, -0.01, -0.05, -0.1, -0.1, -0.1, -0.1)]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    custom = gradient_optimization_loss(z, y, robust_epoch=1, ascent_weights=[-0.5, -0.25], reduction="none")
    assert custom[5].item() == pytest.approx(-0.25 * ce_pon.item(), rel=1e-12)
    # the first robust epoch has weight 0: PON RoIs then contribute nothing, as lncis with PON does
    assert got[0] == 0.0


def test_gradients_descend_on_neg_psn_ascend_on_pon_and_stop_past_the_cap():
    z, y = crafted()
    z.requires_grad_(True)
    gradient_optimization_loss(z, y, robust_epoch=4, reduction="sum").backward()
    p = torch.softmax(z.detach(), dim=1)
    ce_grad = p - torch.nn.functional.one_hot(y, 4)
    torch.testing.assert_close(z.grad[:3], ce_grad[:3])
    torch.testing.assert_close(z.grad[5], -0.05 * ce_grad[5])  # ascent: the label's logit is pushed down
    assert z.grad[5, 3] > 0
    assert (z.grad[6] == 0).all()  # CE above -ln(ascent_min_prob): the ascent has stopped
    p_y = p[torch.arange(7), y][:, None]
    rce_grad = -A * p_y * ce_grad
    torch.testing.assert_close(z.grad[3], rce_grad[3] + 0.01 * ce_grad[3])
    clipped_grad = 10 * p_y * ce_grad  # d/dz of -tau p_y = tau p_y (p - onehot)
    torch.testing.assert_close(z.grad[4], rce_grad[4] + 0.01 * clipped_grad[4])


def test_the_clipped_ce_is_continuous_with_a_bounded_slope():
    # one foreground RoI, K = 1: p_y runs over (0, 1) as the logit gap moves; none is PSN or PON here
    gaps = torch.linspace(-4.0, 6.0, 2001, dtype=torch.float64)
    z = torch.stack([torch.zeros_like(gaps) - 5.0, gaps, torch.zeros_like(gaps)], dim=1)
    y = torch.ones(len(gaps), dtype=torch.int64)
    p_y = torch.softmax(z, dim=1)[:, 1]
    values = gradient_optimization_loss(z, y, clipped_ce_weight=1.0, log_zero=-1e-9, pon_threshold=None,
                                        reduction="none")
    np.testing.assert_allclose(values.numpy(), ref.clipped_ce(p_y.numpy()) + 1e-9 * (1 - p_y.numpy()), rtol=1e-12)
    assert values.diff().abs().max() < 0.02  # no jump where the two pieces meet (p = 0.1)
    slope = values.diff() / p_y.diff()
    assert slope.min() > -10.0 - 1e-6  # |d loss / d p| <= tau everywhere; plain CE reaches -1/p ~ -55 here
    assert p_y.min() < 0.02


@pytest.mark.parametrize("kwargs", [
    {}, {"robust_epoch": 2}, {"robust_epoch": 30}, {"pon_threshold": 2.0, "robust_epoch": 5},
    {"pon_threshold": None}, {"tau": 3.0, "clipped_ce_weight": 1.0, "log_zero": -3.0},
    {"ascent_weights": (-1.0,), "ascent_min_prob": 1e-3, "pon_threshold": 1.0},
])
def test_random_batches_against_a_loop_over_rois(kwargs):
    g = torch.Generator().manual_seed(7)
    z = torch.randn(400, 6, generator=g, dtype=torch.float64) * 4
    z[:50, 0] += 8.0  # PSN well populated
    y = torch.randint(0, 6, (400,), generator=g)
    expected, sets = ref.good(z.numpy(), y.numpy(), **kwargs)
    values, counts = gradient_optimization_loss(z, y, reduction="none", return_counts=True, **kwargs)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert as_ints(counts) == {name: sets.count(name) for name in ("neg", "psn", "os", "pon")}
    assert min(sets.count(name) for name in ("neg", "psn", "os")) > 0
    assert (kwargs.get("pon_threshold", 6.0) is None) == (sets.count("pon") == 0)
    mean = gradient_optimization_loss(z, y, **kwargs)
    total = gradient_optimization_loss(z, y, reduction="sum", **kwargs)
    assert mean.item() == pytest.approx(expected.sum() / 400, rel=1e-10)  # divided by all N RoIs
    assert total.item() == pytest.approx(expected.sum(), rel=1e-10)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(24, 4, generator=g, dtype=torch.float64) * 3
    z[:4, 0] += 4.0
    y = torch.randint(0, 4, (24,), generator=g)
    z.requires_grad_(True)
    # no RoI within the finite-difference step of a set boundary or of the clip point, so the loss is smooth
    assert torch.autograd.gradcheck(lambda x: gradient_optimization_loss(x, y, robust_epoch=5, pon_threshold=2.0), (z,))


@pytest.mark.parametrize("kwargs, message", [
    ({"robust_epoch": -1}, r"^gradient_optimization_loss: robust_epoch must be an integer >= 0, got -1$"),
    ({"robust_epoch": 1.5}, "robust_epoch must be an integer >= 0"),
    ({"tau": 0.5}, r"tau must be >= 1 \(the clip starts at p = 1/tau\), got 0.5"),
    ({"clipped_ce_weight": -0.01}, "clipped_ce_weight must be >= 0"),
    ({"ascent_weights": []}, "ascent_weights must be a non-empty list of numbers <= 0"),
    ({"ascent_weights": [0.0, 0.1]}, r"ascent_weights must be <= 0 \(gradient ascent\), got 0.1"),
    ({"ascent_weights": [0.0, "x"]}, "ascent_weights must be a finite number, got 'x'"),
    ({"ascent_min_prob": 0.0}, r"ascent_min_prob must be in \(0, 1\)"),
    ({"pon_threshold": -6.0}, "pon_threshold must be > 0 or None"),
])
def test_bad_parameters_are_refused_in_one_line(kwargs, message):
    z, y = crafted()
    with pytest.raises(NoisysegError, match=message) as info:
        gradient_optimization_loss(z, y, **kwargs)
    assert "\n" not in str(info.value)
