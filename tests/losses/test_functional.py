"""noisyseg.losses.functional: CE, RCE, SCE, GCE, APL (DESIGN.md §1) and label-smoothed CE against their formulas."""

import numpy as np
import pytest
import torch

import loss_reference as ref

from noisyseg.errors import NoisysegError
from noisyseg.losses import (
    DEFAULT_LOG_ZERO,
    active_passive_loss,
    cross_entropy,
    generalized_cross_entropy,
    label_smoothed_cross_entropy,
    reverse_cross_entropy,
    symmetric_cross_entropy,
    task_specific_loss,
)

ALL_LOSSES = [cross_entropy, reverse_cross_entropy, symmetric_cross_entropy, generalized_cross_entropy,
              active_passive_loss, label_smoothed_cross_entropy, task_specific_loss]


# the float64 reference formulas (explicit softmax and one-hot) are in tests/loss_reference.py


def random_batch(n=64, k=5, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k + 1, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, k + 1, (n,), generator=g)
    return logits, labels


CASES = [
    pytest.param(cross_entropy, {}, ref.ce, id="ce"),
    pytest.param(reverse_cross_entropy, {}, ref.rce, id="rce"),
    pytest.param(reverse_cross_entropy, {"log_zero": -2.5}, lambda z, y: ref.rce(z, y, -2.5), id="rce-A2.5"),
    pytest.param(symmetric_cross_entropy, {}, ref.sce, id="sce"),
    pytest.param(symmetric_cross_entropy, {"alpha": 0.3, "beta": 1.7, "log_zero": -4.0},
                 lambda z, y: ref.sce(z, y, 0.3, 1.7, -4.0), id="sce-custom"),
    pytest.param(generalized_cross_entropy, {}, ref.gce, id="gce"),
    pytest.param(generalized_cross_entropy, {"q": 1.0}, lambda z, y: ref.gce(z, y, 1.0), id="gce-q1"),
    pytest.param(generalized_cross_entropy, {"q": 0.05}, lambda z, y: ref.gce(z, y, 0.05), id="gce-q0.05"),
    pytest.param(active_passive_loss, {}, ref.apl, id="apl"),
    pytest.param(active_passive_loss, {"alpha": 10.0, "beta": 0.1}, lambda z, y: ref.apl(z, y, 10.0, 0.1),
                 id="apl-10-0.1"),
    pytest.param(label_smoothed_cross_entropy, {}, ref.label_smoothed_ce, id="ls"),
    pytest.param(label_smoothed_cross_entropy, {"epsilon": 0.6}, lambda z, y: ref.label_smoothed_ce(z, y, 0.6),
                 id="ls-0.6"),
]


@pytest.mark.parametrize("fn, kwargs, reference", CASES)
def test_matches_the_formula_with_every_reduction(fn, kwargs, reference):
    z, y = random_batch(n=50, k=6, seed=3)
    expected = reference(z.numpy(), y.numpy())
    per_roi = fn(z, y, reduction="none", **kwargs)
    assert per_roi.shape == (50,) and per_roi.dtype == torch.float64
    np.testing.assert_allclose(per_roi.numpy(), expected, rtol=1e-10, atol=1e-12)
    total = fn(z, y, reduction="sum", **kwargs)
    mean = fn(z, y, **kwargs)
    assert total.shape == () and mean.shape == ()
    assert total.item() == pytest.approx(expected.sum(), rel=1e-10)
    assert mean.item() == pytest.approx(expected.sum() / 50, rel=1e-10)
    assert mean.item() == pytest.approx(per_roi.mean().item(), rel=1e-12)


@pytest.mark.parametrize("k", [1, 4, 80])
@pytest.mark.parametrize("log_zero", [DEFAULT_LOG_ZERO, -1.5])
def test_rce_summed_over_every_label_is_the_constant_minus_a_times_k(k, log_zero):
    z, _ = random_batch(n=16, k=k, seed=k, scale=6.0)
    # every RoI paired with every possible label in one call: row i * (K+1) + c holds (z_i, c)
    every_label = torch.arange(k + 1).repeat(16)
    rce = reverse_cross_entropy(z.repeat_interleave(k + 1, dim=0), every_label, log_zero=log_zero, reduction="none")
    total = rce.reshape(16, k + 1).sum(dim=1)
    torch.testing.assert_close(total, torch.full((16,), -log_zero * k, dtype=torch.float64))


def test_rce_closed_form_and_bounds():
    z, y = random_batch(n=40, k=3, seed=1, scale=8.0)
    p_y = torch.softmax(z, dim=1)[torch.arange(40), y]
    rce = reverse_cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(rce, -DEFAULT_LOG_ZERO * (1 - p_y))
    assert (rce >= 0).all() and (rce <= -DEFAULT_LOG_ZERO).all()


def test_gce_approaches_ce_for_small_q():
    z, y = random_batch(n=30, k=4, seed=2, scale=1.0)
    torch.testing.assert_close(generalized_cross_entropy(z, y, q=1e-6), cross_entropy(z, y), rtol=1e-5, atol=0)


def test_label_smoothing_keeps_background_rois_and_zero_epsilon_is_ce():
    z, y = random_batch(n=80, k=5, seed=7)
    assert (y == 0).any() and (y > 0).any()
    smoothed = label_smoothed_cross_entropy(z, y, epsilon=0.4, reduction="none")
    plain = cross_entropy(z, y, reduction="none")
    background = y == 0
    assert torch.equal(smoothed[background], plain[background])  # object-vs-background stays CE
    assert not torch.allclose(smoothed[~background], plain[~background])
    assert torch.equal(label_smoothed_cross_entropy(z, y, epsilon=0.0, reduction="none"), plain)
    # an object RoI's minimiser: 1 - epsilon + epsilon / K on its label, epsilon / K on the other objects
    k, eps, label = 5, 0.4, 2
    best = torch.full((1, k + 1), eps / k, dtype=torch.float64)
    best[0, 0], best[0, label] = 1e-300, 1 - eps + eps / k
    z_best = best.log().requires_grad_(True)
    label_smoothed_cross_entropy(z_best, torch.tensor([label]), epsilon=eps).backward()
    assert z_best.grad.abs().max().item() < 1e-12


def test_apl_defaults_are_equal_weights_of_nce_and_rce():
    z, y = random_batch(n=30, k=4, seed=5)
    log_p = torch.log_softmax(z, dim=1)
    nce = log_p[torch.arange(30), y] / log_p.sum(dim=1)
    expected = nce + reverse_cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(active_passive_loss(z, y, reduction="none"), expected)
    assert ((nce >= 0) & (nce <= 1)).all()


@pytest.mark.parametrize("fn, kwargs, _", CASES)
def test_gradcheck_float64(fn, kwargs, _):
    z, y = random_batch(n=10, k=3, seed=4, scale=1.5)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, y, reduction="none", **kwargs), (z,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: fn(x, y, **kwargs), (z,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_half_precision_logits_give_a_float32_result(fn, dtype):
    z, y = random_batch(n=64, k=8, seed=6, scale=2.0, dtype=torch.float32)
    half = z.to(dtype).requires_grad_(True)
    out = fn(half, y)
    assert out.dtype == torch.float32
    # the same half-precision values computed in float32 agree tightly; the float32 logits loosely
    assert out.item() == pytest.approx(fn(half.detach().float(), y).item(), rel=1e-6)
    assert out.item() == pytest.approx(fn(z, y).item(), rel=0.02, abs=0.02)
    out.backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()


@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_extreme_logits_stay_finite(fn):
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 3e4]], requires_grad=True)
    y = torch.tensor([1, 0, 2])
    out = fn(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_no_rois_gives_a_zero_loss_that_still_backpropagates(fn, reduction):
    z = torch.zeros(0, 4, requires_grad=True)
    out = fn(z, torch.zeros(0, dtype=torch.int64), reduction=reduction)
    assert out.requires_grad
    if reduction == "none":
        assert out.shape == (0,)
        out = out.sum()
    assert out.shape == () and out.item() == 0.0
    out.backward()
    assert z.grad is not None and z.grad.shape == (0, 4)
    no_grad = fn(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), reduction=reduction)
    assert not no_grad.requires_grad


@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_out_of_range_labels_are_refused(fn):
    z = torch.zeros(3, 4)
    with pytest.raises(NoisysegError, match=r"^labels must be in 0\.\.3 \(0 = background, K = 3 classes\), "
                                             r"got values in 0\.\.4$"):
        fn(z, torch.tensor([0, 1, 4]))
    with pytest.raises(NoisysegError, match=r"got values in -1\.\.2$"):
        fn(z, torch.tensor([2, -1, 0]))


@pytest.mark.parametrize("logits, labels, reduction, message", [
    (torch.zeros(3, 4), torch.tensor([0, 1]), "mean", r"labels must have shape \(N,\) = \(3,\)"),
    (torch.zeros(3, 4), torch.zeros(3, 1, dtype=torch.int64), "mean", r"labels must have shape \(N,\)"),
    (torch.zeros(4), torch.tensor([0, 1, 2, 3]), "mean", r"logits must have shape \(N, K\+1\) with K >= 1"),
    (torch.zeros(3, 1), torch.tensor([0, 0, 0]), "mean", r"logits must have shape \(N, K\+1\) with K >= 1"),
    (torch.zeros(3, 4, dtype=torch.int64), torch.tensor([0, 1, 2]), "mean", "logits must be a floating-point"),
    (torch.zeros(3, 4), torch.tensor([0.0, 1.0, 2.0]), "mean", r"labels must be an integer tensor \(int64\)"),
    (torch.zeros(3, 4), torch.tensor([True, False, True]), "mean", "labels must be an integer tensor"),
    (torch.zeros(3, 4), torch.tensor([0, 1, 2]), "avg", "reduction must be one of mean, sum, none, got 'avg'"),
])
def test_bad_shapes_and_types_are_refused_in_one_line(logits, labels, reduction, message):
    for fn in ALL_LOSSES:
        with pytest.raises(NoisysegError, match=message) as info:
            fn(logits, labels, reduction=reduction)
        assert "\n" not in str(info.value)


def test_int32_labels_are_accepted():
    z, y = random_batch(n=20, k=3)
    torch.testing.assert_close(cross_entropy(z, y.int()), cross_entropy(z, y))


@pytest.mark.parametrize("fn, kwargs, message", [
    (generalized_cross_entropy, {"q": 0.0}, r"q must be in \(0, 1\]"),
    (generalized_cross_entropy, {"q": 1.5}, r"q must be in \(0, 1\]"),
    (symmetric_cross_entropy, {"beta": -0.1}, "beta must be >= 0"),
    (active_passive_loss, {"alpha": float("nan")}, "alpha must be a finite number"),
    (reverse_cross_entropy, {"log_zero": 0.0}, "log_zero must be < 0"),
])
def test_bad_parameter_values_are_refused(fn, kwargs, message):
    z, y = random_batch(n=4, k=2)
    with pytest.raises(NoisysegError, match=message):
        fn(z, y, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fn", ALL_LOSSES)
def test_cuda_matches_cpu_and_does_not_synchronise(fn):
    z, y = random_batch(n=256, k=10, seed=7)
    zc, yc = z.cuda().requires_grad_(True), y.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fn(zc, yc)
        out.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda"
    assert out.item() == pytest.approx(fn(z, y).item(), rel=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_and_empty_batch(dtype):
    z, y = random_batch(n=128, k=10, seed=8, dtype=torch.float32)
    for fn in ALL_LOSSES:
        out = fn(z.cuda().to(dtype), y.cuda())
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(fn(z.to(dtype).float(), y).item(), rel=1e-5)
        empty = torch.zeros(0, 11, device="cuda", dtype=dtype, requires_grad=True)
        zero = fn(empty, torch.zeros(0, dtype=torch.int64, device="cuda"))
        zero.backward()
        assert zero.item() == 0.0 and empty.grad.shape == (0, 11)
