import math

import numpy as np
import pytest
import torch

import loss_reference as ref
from noisyseg.errors import NoisysegError
from noisyseg.losses import (active_passive_loss, cross_entropy, generalized_cross_entropy, reverse_cross_entropy,
                             symmetric_cross_entropy, task_specific_loss)

LOSSES = [
    (cross_entropy, ref.ce, {}),
    (reverse_cross_entropy, ref.rce, {}),
    (reverse_cross_entropy, lambda z, y: ref.rce(z, y, log_zero=-3.0), {"log_zero": -3.0}),
    (symmetric_cross_entropy, ref.sce, {}),
    (symmetric_cross_entropy, lambda z, y: ref.sce(z, y, 0.5, 2.0), {"alpha": 0.5, "beta": 2.0}),
    (generalized_cross_entropy, ref.gce, {}),
    (generalized_cross_entropy, lambda z, y: ref.gce(z, y, 0.7), {"q": 0.7}),
    (active_passive_loss, ref.apl, {}),
]


def _inputs(n=64, k=5, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k + 1, generator=g, dtype=torch.float64) * scale, torch.randint(0, k + 1, (n,), generator=g)


@pytest.mark.parametrize("fn, reference, kwargs", LOSSES)
def test_matches_the_formula(fn, reference, kwargs):
    z, y = _inputs()
    expected = reference(z.numpy(), y.numpy())
    per_roi = fn(z, y, reduction="none", **kwargs)
    assert per_roi.shape == (64,)
    np.testing.assert_allclose(per_roi.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert fn(z, y, reduction="sum", **kwargs).item() == pytest.approx(expected.sum(), rel=1e-10)
    assert fn(z, y, **kwargs).item() == pytest.approx(expected.mean(), rel=1e-10)


def test_rce_is_symmetric_summed_over_all_labels():
    # sum over every possible label of RCE = -A * K for any logits (the symmetric-loss condition)
    k = 7
    for seed in range(3):
        z, _ = _inputs(n=10, k=k, seed=seed, scale=5.0)
        total = sum(reverse_cross_entropy(z, torch.full((10,), c), reduction="none") for c in range(k + 1))
        assert torch.allclose(total, torch.full((10,), -math.log(1e-4) * k, dtype=torch.float64))


@pytest.mark.parametrize("fn, _, kwargs", LOSSES + [
    (task_specific_loss, None, {}),
    (task_specific_loss, None, {"robust": "gce", "pon_threshold": 1.0, "q": 0.6}),
    (task_specific_loss, None, {"robust": "sce", "alpha": 0.7, "beta": 0.4, "ce_weight": 2.0}),
    (task_specific_loss, None, {"robust": "apl", "robust_weight": 0.5}),
    (task_specific_loss, None, {"reduction": "none"}),
])
def test_gradcheck(fn, _, kwargs):
    z, y = _inputs(n=12, k=3, seed=4, scale=1.0)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, y, **kwargs), (z,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    z, y = _inputs(n=32, k=4, scale=2.0)
    zh = z.to(dtype)
    for fn in (cross_entropy, reverse_cross_entropy, symmetric_cross_entropy, generalized_cross_entropy,
               active_passive_loss, task_specific_loss):
        out = fn(zh, y)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(fn(zh.float(), y).item(), rel=1e-6)


def test_extreme_logits_stay_finite():
    z = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]], requires_grad=True)
    y = torch.tensor([1, 0])
    for fn in (cross_entropy, reverse_cross_entropy, symmetric_cross_entropy, generalized_cross_entropy,
               active_passive_loss, task_specific_loss):
        out = fn(z, y)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all()
        z.grad = None


@pytest.mark.parametrize("fn", [cross_entropy, reverse_cross_entropy, symmetric_cross_entropy,
                                generalized_cross_entropy, active_passive_loss, task_specific_loss])
def test_no_rois_gives_a_zero_loss_that_backpropagates(fn):
    z = torch.zeros(0, 4, requires_grad=True)
    out = fn(z, torch.zeros(0, dtype=torch.int64))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert z.grad.shape == (0, 4)


def test_bad_labels_and_shapes():
    z = torch.zeros(3, 4)
    with pytest.raises(NoisysegError, match=r"labels must be in 0..3 \(0 = background\), got values in 0..4"):
        cross_entropy(z, torch.tensor([0, 1, 4]))
    with pytest.raises(NoisysegError, match="got values in -1..1"):
        task_specific_loss(z, torch.tensor([-1, 1, 0]))
    with pytest.raises(NoisysegError, match=r"labels must have shape \(3,\)"):
        cross_entropy(z, torch.tensor([0, 1]))
    with pytest.raises(NoisysegError, match="reduction must be one of mean, sum, none"):
        cross_entropy(z, torch.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(NoisysegError, match=r"logits must have shape \(N, K\+1\)"):
        cross_entropy(torch.zeros(4), torch.tensor([0, 1, 2, 3]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    z, y = _inputs(n=256, k=10)
    for fn in (cross_entropy, symmetric_cross_entropy, task_specific_loss):
        assert fn(z.cuda(), y.cuda()).item() == pytest.approx(fn(z, y).item(), rel=1e-9)
