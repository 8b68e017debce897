"""The task-specific (LNCIS) loss: the NEG/PSN/OS/PON partition, each set's term, normalisation by N."""

import math

import numpy as np
import pytest
import torch

import loss_reference as ref

from noisyseg.errors import NoisysegError
from noisyseg.losses import task_specific_loss

A = math.log(1e-4)


# the float64 reference (a plain loop over RoIs on numpy softmax probabilities) is tests/loss_reference.py

loop_reference = ref.task_specific


def as_ints(counts):
    return {k: int(v) for k, v in counts.items()}


# ---- crafted RoIs, one or more in every set ------------------------------------------------------------

def crafted():
    """Seven RoIs, K = 3: NEG x2, PSN x2 (one by a tie with the background), OS x2, one OS/PON candidate."""
    logits = torch.tensor([
        [4.0, 0.0, 0.0, 0.0],    # y=0                                  -> NEG
        [0.0, 3.0, 0.0, 0.0],    # y=0, model says class 1              -> NEG (still CE)
        [5.0, 1.0, 0.0, 0.0],    # y=2, model says background           -> PSN
        [2.0, 2.0, 0.0, 0.0],    # y=1, background ties class 1         -> PSN (argmax takes the first)
        [0.0, 4.0, 0.0, 0.0],    # y=1, model agrees                    -> OS
        [0.0, 1.0, 2.0, 0.0],    # y=1, model says class 2 (CE ~ 1.4)   -> OS
        [0.0, 9.0, 0.0, -1.0],   # y=3, model says class 1 (CE ~ 10)    -> OS, or PON with threshold 6
    ], dtype=torch.float64)
    labels = torch.tensor([0, 0, 2, 1, 1, 1, 3])
    return logits, labels


NEG_PSN, OS, PON_CANDIDATE = slice(0, 4), slice(4, 7), 6


def per_roi_ce(z, y):
    return -torch.log_softmax(z, dim=1)[torch.arange(len(y)), y]


@pytest.mark.parametrize("robust", ["rce", "sce", "gce", "apl"])
def test_each_crafted_roi_gets_the_term_of_its_set(robust):
    z, y = crafted()
    ce = per_roi_ce(z, y)
    robust_ref, _ = loop_reference(z.numpy(), y.numpy(), robust=robust)

    values, counts = task_specific_loss(z, y, robust=robust, reduction="none", return_counts=True)
    torch.testing.assert_close(values[NEG_PSN], ce[NEG_PSN])
    np.testing.assert_allclose(values[OS].numpy(), robust_ref[OS], rtol=1e-12)
    assert as_ints(counts) == {"neg": 2, "psn": 2, "os": 3, "pon": 0}

    values, counts = task_specific_loss(z, y, robust=robust, pon_threshold=6.0, reduction="none",
                                        return_counts=True)
    assert ce[PON_CANDIDATE] > 6.0 and values[PON_CANDIDATE].item() == 0.0
    torch.testing.assert_close(values[NEG_PSN], ce[NEG_PSN])
    np.testing.assert_allclose(values[4:6].numpy(), robust_ref[4:6], rtol=1e-12)
    assert as_ints(counts) == {"neg": 2, "psn": 2, "os": 2, "pon": 1}


def test_rce_is_the_default_robust_term():
    z, y = crafted()
    values = task_specific_loss(z, y, reduction="none")
    p_y = torch.softmax(z, dim=1)[torch.arange(7), y]
    torch.testing.assert_close(values[OS], -A * (1 - p_y[OS]))


def test_counts_are_int64_scalars_on_the_logits_device():
    z, y = crafted()
    _, counts = task_specific_loss(z, y, return_counts=True)
    assert list(counts) == ["neg", "psn", "os", "pon"]
    for value in counts.values():
        assert isinstance(value, torch.Tensor) and value.shape == () and value.dtype == torch.int64
        assert value.device == z.device
    assert sum(as_ints(counts).values()) == 7


def test_gradients_go_only_where_the_sets_say():
    z, y = crafted()
    z.requires_grad_(True)
    task_specific_loss(z, y, pon_threshold=6.0, reduction="sum").backward()
    ce_grad = torch.softmax(z.detach(), dim=1) - torch.nn.functional.one_hot(y, 4)
    torch.testing.assert_close(z.grad[NEG_PSN], ce_grad[NEG_PSN])  # NEG and PSN: the CE gradient
    assert (z.grad[PON_CANDIDATE] == 0).all()  # PON: no gradient at all
    p = torch.softmax(z.detach(), dim=1)
    p_y = p[torch.arange(7), y][:, None]
    rce_grad = -A * p_y * (p - torch.nn.functional.one_hot(y, 4))  # d/dz of -A (1 - p_y)
    torch.testing.assert_close(z.grad[4:6], rce_grad[4:6])


@pytest.mark.parametrize("robust, kwargs", [
    ("rce", {}), ("rce", {"log_zero": -3.0}),
    ("sce", {}), ("sce", {"alpha": 0.5, "beta": 2.0}),
    ("gce", {}), ("gce", {"q": 0.8}),
    ("apl", {}), ("apl", {"alpha": 10.0, "beta": 0.1}),
])
@pytest.mark.parametrize("pon_threshold", [None, 3.0])
def test_random_batches_against_a_loop_over_rois(robust, kwargs, pon_threshold):
    g = torch.Generator().manual_seed(11)
    z = torch.randn(300, 7, generator=g, dtype=torch.float64) * 3
    z[:40, 0] += 6.0  # make sure PSN is well populated
    y = torch.randint(0, 7, (300,), generator=g)
    expected, sets = loop_reference(z.numpy(), y.numpy(), robust, 1.5, 0.7, pon_threshold, **kwargs)
    values, counts = task_specific_loss(z, y, robust=robust, ce_weight=1.5, robust_weight=0.7,
                                        pon_threshold=pon_threshold, reduction="none", return_counts=True, **kwargs)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert as_ints(counts) == {name: sets.count(name) for name in ("neg", "psn", "os", "pon")}
    assert min(sets.count(name) for name in ("neg", "psn", "os")) > 0
    assert (pon_threshold is None) == (sets.count("pon") == 0)
    mean = task_specific_loss(z, y, robust=robust, ce_weight=1.5, robust_weight=0.7,
                              pon_threshold=pon_threshold, **kwargs)
    total = task_specific_loss(z, y, robust=robust, ce_weight=1.5, robust_weight=0.7,
                               pon_threshold=pon_threshold, reduction="sum", **kwargs)
    assert mean.item() == pytest.approx(expected.sum() / 300, rel=1e-10)
    assert total.item() == pytest.approx(expected.sum(), rel=1e-10)
    assert values.mean().item() == pytest.approx(mean.item(), rel=1e-12)


def test_mean_divides_by_all_rois_not_by_the_size_of_each_set():
    z, y = crafted()
    total = task_specific_loss(z, y, reduction="sum").item()
    assert task_specific_loss(z, y).item() == pytest.approx(total / 7, rel=1e-12)
    # three more background RoIs with (numerically) zero CE: the sum stays, N grows 7 -> 10
    confident_background = torch.tensor([[80.0, 0.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    z10, y10 = torch.cat([z, confident_background]), torch.cat([y, torch.zeros(3, dtype=torch.int64)])
    assert task_specific_loss(z10, y10, reduction="sum").item() == pytest.approx(total, rel=1e-12)
    assert task_specific_loss(z10, y10).item() == pytest.approx(task_specific_loss(z, y).item() * 7 / 10, rel=1e-12)
    # PON RoIs also count in N although they contribute nothing
    with_pon = task_specific_loss(z, y, pon_threshold=6.0)
    without_pon_roi = task_specific_loss(z[:6], y[:6], pon_threshold=6.0)
    assert with_pon.item() == pytest.approx(without_pon_roi.item() * 6 / 7, rel=1e-12)


def test_weights_scale_only_their_own_terms():
    z, y = crafted()
    base = task_specific_loss(z, y, reduction="none")
    scaled = task_specific_loss(z, y, reduction="none", ce_weight=2.0, robust_weight=0.25)
    torch.testing.assert_close(scaled[NEG_PSN], 2.0 * base[NEG_PSN])
    torch.testing.assert_close(scaled[OS], 0.25 * base[OS])
    off = task_specific_loss(z, y, reduction="none", robust_weight=0.0)
    assert (off[OS] == 0).all()


def test_all_background_batch_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.zeros(30, dtype=torch.int64)
    loss, counts = task_specific_loss(z, y, return_counts=True)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(z, y))
    assert as_ints(counts) == {"neg": 30, "psn": 0, "os": 0, "pon": 0}


@pytest.mark.parametrize("kwargs", [
    {}, {"robust": "sce", "alpha": 0.7, "beta": 0.4, "ce_weight": 2.0}, {"robust": "gce", "q": 0.6},
    {"robust": "apl", "robust_weight": 0.5}, {"pon_threshold": 1.5},
])
def test_gradcheck_float64(kwargs):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(16, 4, generator=g, dtype=torch.float64)
    z[:4, 0] += 3.0  # some PSN RoIs; the partition is constant under gradcheck's tiny perturbations
    y = torch.randint(0, 4, (16,), generator=g)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: task_specific_loss(x, y, **kwargs), (z,))
    assert torch.autograd.gradcheck(lambda x: task_specific_loss(x, y, reduction="none", **kwargs), (z,),
                                    fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gives_float32_and_the_same_partition(dtype):
    z, y = crafted()
    half = z.to(dtype)
    loss, counts = task_specific_loss(half, y, pon_threshold=6.0, return_counts=True)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(task_specific_loss(half.float(), y, pon_threshold=6.0).item(), rel=1e-6)
    assert loss.item() == pytest.approx(task_specific_loss(z, y, pon_threshold=6.0).item(), rel=1e-2)
    assert as_ints(counts) == {"neg": 2, "psn": 2, "os": 2, "pon": 1}


def test_no_rois():
    z = torch.zeros(0, 81, requires_grad=True)
    loss, counts = task_specific_loss(z, torch.zeros(0, dtype=torch.int64), return_counts=True)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad.shape == (0, 81)
    assert as_ints(counts) == {"neg": 0, "psn": 0, "os": 0, "pon": 0}


@pytest.mark.parametrize("kwargs, message", [
    ({"robust": "mae"}, "robust must be one of rce, sce, gce, apl, got 'mae'"),
    ({"robust": "rce", "q": 0.5}, r"^task_specific_loss: unknown parameter\(s\) q with robust='rce'; valid: "
                                  r"ce_weight, ignore_confident, learned_at, log_zero, pon_threshold, robust, robust_weight$"),
    ({"robust": "gce", "alpha": 0.5}, r"unknown parameter\(s\) alpha with robust='gce'; valid: .*robust_weight, q$"),
    ({"robust": "sce", "gamma": 1.0}, r"unknown parameter\(s\) gamma with robust='sce'; valid: .*, alpha, beta$"),
    ({"robust": "gce", "q": 0.0}, r"q must be in \(0, 1\]"),
    ({"ce_weight": -1.0}, "ce_weight must be >= 0"),
    ({"pon_threshold": -6.0}, "pon_threshold must be > 0 or None"),
    ({"log_zero": 2.0}, "log_zero must be < 0"),
])
def test_bad_parameters(kwargs, message):
    z, y = crafted()
    with pytest.raises(NoisysegError, match=message):
        task_specific_loss(z, y, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("robust", ["rce", "sce", "gce", "apl"])
def test_cuda_matches_cpu_without_synchronising(robust):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(512, 11, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 11, (512,), generator=g)
    zc = z.cuda().requires_grad_(True)
    yc = y.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, counts = task_specific_loss(zc, yc, robust=robust, pon_threshold=6.0, return_counts=True)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for v in counts.values())
    cpu_loss, cpu_counts = task_specific_loss(z, y, robust=robust, pon_threshold=6.0, return_counts=True)
    assert loss.item() == pytest.approx(cpu_loss.item(), rel=1e-9)
    assert as_ints(counts) == as_ints(cpu_counts)
