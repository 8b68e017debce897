"""noisyseg.losses.registry: every named loss builds, runs, resolves its defaults and refuses bad input."""

import math

import pytest
import torch

from noisyseg.errors import NoisysegError
from noisyseg.losses import (
    RoIClassificationLoss,
    active_passive_loss,
    available_losses,
    build_loss,
    cross_entropy,
    generalized_cross_entropy,
    reverse_cross_entropy,
    symmetric_cross_entropy,
    gradient_optimization_loss,
    label_smoothed_cross_entropy,
    task_specific_loss,
)
from noisyseg.losses import functional

A = math.log(1e-4)


def batch(n=40, k=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k + 1, generator=g, dtype=dtype) * 2
    labels = torch.randint(0, k + 1, (n,), generator=g)
    return logits, labels


class _GivenOneHotTargets(RoIClassificationLoss):
    """A loss that takes soft targets ("posterior"), called without them, gets its labels one-hot (what
    its targets are on clean labels), so the generic tests below can call every loss alike."""

    def __call__(self, logits, labels, class_targets=None):
        if class_targets is None:
            class_targets = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return super().__call__(logits, labels, class_targets)


def ready(name, k=4, **params):
    """``build_loss(name)``, and for a loss that trains through a transition matrix a (k, k) one: 0.7 on the
    diagonal, the rest spread evenly; a loss that takes soft targets gets one-hot ones."""
    loss_fn = build_loss(name, **params)
    if loss_fn.needs_transition_matrix:
        loss_fn.set_transition_matrix(torch.full((k, k), 0.3 / (k - 1)).fill_diagonal_(0.7))
    if loss_fn.needs_class_targets:
        loss_fn.__class__ = _GivenOneHotTargets
    return loss_fn


def test_the_registered_names():
    assert available_losses() == ["ce", "rce", "sce", "gce", "apl", "ls", "lncis", "good", "forward", "posterior"]
    assert available_losses() is not available_losses()  # callers may not mutate the registry


@pytest.mark.parametrize("name", available_losses())
def test_every_registered_loss_builds_runs_and_backpropagates(name):
    loss_fn = ready(name)
    assert isinstance(loss_fn, RoIClassificationLoss) and loss_fn.name == name
    assert "reduction" not in loss_fn.params and "return_counts" not in loss_fn.params
    z, y = batch()
    z.requires_grad_(True)
    loss, stats = loss_fn(z, y)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    if name in ("lncis", "good"):
        assert set(stats) == {"neg", "psn", "os", "pon"}
        assert sum(int(v) for v in stats.values()) == 40
    else:
        assert stats == {}
    assert name in repr(loss_fn)


@pytest.mark.parametrize("name", available_losses())
def test_every_registered_loss_handles_half_precision_and_no_rois(name):
    loss_fn = ready(name)
    z, y = batch(dtype=torch.bfloat16)
    assert loss_fn(z, y)[0].dtype == torch.float32
    empty = torch.zeros(0, 5, requires_grad=True)
    loss, _ = loss_fn(empty, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == (0, 5)


@pytest.mark.parametrize("name, params, resolved", [
    ("ce", {}, {}),
    ("rce", {}, {"log_zero": A}),
    ("sce", {"beta": 0.5}, {"alpha": 1.0, "beta": 0.5, "log_zero": A}),
    ("gce", {}, {"q": 0.3}),
    ("apl", {}, {"alpha": 1.0, "beta": 1.0, "log_zero": A}),
    ("ls", {}, {"epsilon": 0.1}),
    ("lncis", {}, {"robust": "rce", "ce_weight": 1.0, "robust_weight": 1.0, "pon_threshold": None,
                   "log_zero": A, "ignore_confident": None, "learned_at": None}),
    ("lncis", {"robust": "sce", "pon_threshold": 6.0},
     {"robust": "sce", "ce_weight": 1.0, "robust_weight": 1.0, "pon_threshold": 6.0, "log_zero": A,
      "ignore_confident": None, "learned_at": None, "alpha": 1.0, "beta": 0.1}),
    ("lncis", {"robust": "gce", "q": 0.7}, {"robust": "gce", "ce_weight": 1.0, "robust_weight": 1.0,
                                            "pon_threshold": None, "log_zero": A, "ignore_confident": None, "learned_at": None,
                                            "q": 0.7}),
    ("lncis", {"robust": "apl", "alpha": 10.0}, {"robust": "apl", "ce_weight": 1.0, "robust_weight": 1.0,
                                                 "pon_threshold": None, "log_zero": A, "ignore_confident": None, "learned_at": None,
                                                 "alpha": 10.0, "beta": 1.0}),
    ("good", {}, {"pon_threshold": 6.0, "ascent_weights": (0.0, -0.001, -0.005, -0.01, -0.05, -0.1), "tau": 10.0,
                  "clipped_ce_weight": 0.01, "log_zero": A, "ascent_min_prob": 1e-7}),
    ("good", {"ascent_weights": [0, -0.5], "clipped_ce_weight": 1},  # as YAML gives them: a list, integers
     {"pon_threshold": 6.0, "ascent_weights": (0.0, -0.5), "tau": 10.0, "clipped_ce_weight": 1,
      "log_zero": A, "ascent_min_prob": 1e-7}),
])
def test_params_hold_every_resolved_value(name, params, resolved):
    assert build_loss(name, **params).params == resolved


@pytest.mark.parametrize("name, params, direct", [
    ("ce", {}, lambda z, y: cross_entropy(z, y)),
    ("rce", {"log_zero": -3.0}, lambda z, y: reverse_cross_entropy(z, y, log_zero=-3.0)),
    ("sce", {"alpha": 0.5, "beta": 1.0}, lambda z, y: symmetric_cross_entropy(z, y, alpha=0.5, beta=1.0)),
    ("gce", {"q": 0.9}, lambda z, y: generalized_cross_entropy(z, y, q=0.9)),
    ("ls", {"epsilon": 0.3}, lambda z, y: label_smoothed_cross_entropy(z, y, epsilon=0.3)),
    ("apl", {"beta": 0.2}, lambda z, y: active_passive_loss(z, y, beta=0.2)),
    ("lncis", {"robust": "sce", "beta": 0.5, "pon_threshold": 2.0, "ce_weight": 0.5},
     lambda z, y: task_specific_loss(z, y, robust="sce", beta=0.5, pon_threshold=2.0, ce_weight=0.5)),
    ("good", {"pon_threshold": 1.0, "tau": 4.0}, lambda z, y: gradient_optimization_loss(z, y, pon_threshold=1.0, tau=4.0)),
])
def test_parameters_reach_the_function(name, params, direct):
    z, y = batch(dtype=torch.float64)
    loss, _ = build_loss(name, **params)(z, y)
    assert loss.item() == pytest.approx(direct(z, y).item(), rel=1e-12)


def test_lncis_statistics_are_the_partition_counts():
    z, y = batch(n=200, seed=3)
    _, stats = build_loss("lncis", pon_threshold=1.0)(z, y)
    _, counts = task_specific_loss(z, y, pon_threshold=1.0, return_counts=True)
    assert {k: int(v) for k, v in stats.items()} == {k: int(v) for k, v in counts.items()}
    assert all(v.dtype == torch.int64 and v.shape == () for v in stats.values())


def test_good_takes_the_robust_epoch_from_set_robust_epoch():
    z, y = batch(n=300, seed=5, dtype=torch.float64)
    loss_fn = build_loss("good", pon_threshold=1.0)
    assert loss_fn.uses_robust_epoch and loss_fn.robust_epoch == 0
    seen = []
    for epoch in (0, 2, 4, 7):
        loss_fn.set_robust_epoch(epoch)
        loss, stats = loss_fn(z, y)
        direct, counts = gradient_optimization_loss(z, y, robust_epoch=epoch, pon_threshold=1.0, return_counts=True)
        assert loss.item() == pytest.approx(direct.item(), rel=1e-12)
        assert {k: int(v) for k, v in stats.items()} == {k: int(v) for k, v in counts.items()}
        seen.append(loss.item())
    assert int(stats["pon"]) > 0 and seen[0] > seen[1] > seen[2] > seen[3]  # the ascent grows with the epoch
    with pytest.raises(NoisysegError, match=r"^loss good: robust_epoch must be an integer >= 0, got -1$"):
        loss_fn.set_robust_epoch(-1)


@pytest.mark.parametrize("name", [n for n in available_losses() if n != "good"])
def test_the_other_losses_ignore_the_robust_epoch(name):
    z, y = batch()
    loss_fn = ready(name)
    before = loss_fn(z, y)[0].item()
    loss_fn.set_robust_epoch(5)
    assert not loss_fn.uses_robust_epoch and loss_fn(z, y)[0].item() == before


@pytest.mark.parametrize("name, params", [("sce", {"beta": 0.5}), ("lncis", {"robust": "gce", "q": 0.6}),
                                          ("good", {"tau": 5.0})])
def test_parameters_are_validated_once_when_built_not_on_every_call(name, params, monkeypatch):
    loss_fn = build_loss(name, **params)
    z, y = batch(dtype=torch.float64)
    expected = loss_fn(z, y)[0].item()

    def fail(*args, **kwargs):
        raise AssertionError("parameters re-validated during a training step")

    for checker in ("check_loss_params", "resolve_params", "loss_parameters"):
        monkeypatch.setattr(functional, checker, fail)
    assert loss_fn(z, y)[0].item() == expected


def test_params_are_copied():
    given = {"q": 0.5}
    loss_fn = build_loss("gce", **given)
    given["q"] = 0.9
    assert loss_fn.params == {"q": 0.5}


@pytest.mark.parametrize("name, params, message", [
    ("focal", {}, r"^unknown loss 'focal'; available: ce, rce, sce, gce, apl, ls, lncis, good, forward, posterior$"),
    (None, {}, r"^unknown loss None; available: ce, rce, sce, gce, apl, ls, lncis, good, forward, posterior$"),
    ("ce", {"q": 0.3}, r"^loss ce: unknown parameter\(s\) q; valid: none$"),
    ("sce", {"gamma": 1, "delta": 2}, r"^loss sce: unknown parameter\(s\) delta, gamma; valid: alpha, beta, log_zero$"),
    ("gce", {"reduction": "sum"}, r"unknown parameter\(s\) reduction; valid: q$"),
    ("lncis", {"gamma": 6.0}, r"^loss lncis: unknown parameter\(s\) gamma with robust='rce'; "
                              r"valid: ce_weight, ignore_confident, learned_at, log_zero, pon_threshold, robust, robust_weight$"),
    ("lncis", {"robust": "gce", "beta": 0.1}, r"unknown parameter\(s\) beta with robust='gce'; "
                                              r"valid: ce_weight, ignore_confident, learned_at, log_zero, pon_threshold, robust, "
                                              r"robust_weight, q$"),
    ("lncis", {"robust": "mae"}, r"^loss lncis: robust must be one of rce, sce, gce, apl, got 'mae'$"),
    ("lncis", {"robust": 3}, "robust must be one of rce, sce, gce, apl, got 3"),
    ("good", {"robust": "rce"}, r"^loss good: unknown parameter\(s\) robust; valid: ascent_min_prob, ascent_weights, "
                                r"clipped_ce_weight, log_zero, pon_threshold, tau$"),
    ("good", {"robust_epoch": 2}, r"unknown parameter\(s\) robust_epoch; valid: "),  # the trainer's, not a config's
])
def test_unknown_names_and_parameters_list_the_valid_ones(name, params, message):
    with pytest.raises(NoisysegError, match=message):
        build_loss(name, **params)


@pytest.mark.parametrize("name, params, message", [
    ("gce", {"q": 0}, r"loss gce: q must be in \(0, 1\], got 0"),
    ("gce", {"q": 1.01}, r"q must be in \(0, 1\]"),
    ("gce", {"q": "0.3"}, "q must be a finite number, got '0.3'"),
    ("gce", {"q": True}, "q must be a finite number"),
    ("sce", {"alpha": -1.0}, "alpha must be >= 0"),
    ("apl", {"beta": float("inf")}, "beta must be a finite number"),
    ("rce", {"log_zero": 0.0}, "log_zero must be < 0"),
    ("lncis", {"ce_weight": -0.5}, "ce_weight must be >= 0"),
    ("lncis", {"robust_weight": None}, "robust_weight must be a finite number"),
    ("lncis", {"pon_threshold": 0}, "pon_threshold must be > 0 or None"),
    ("lncis", {"pon_threshold": "6"}, "pon_threshold must be a finite number"),
    ("lncis", {"robust": "sce", "beta": -0.1}, "beta must be >= 0"),
    ("good", {"ascent_weights": 0.1}, "loss good: ascent_weights must be a non-empty list of numbers <= 0"),
    ("good", {"ascent_weights": [-0.1, 0.2]}, r"ascent_weights must be <= 0 \(gradient ascent\), got 0.2"),
    ("good", {"tau": 0.5}, "loss good: tau must be >= 1"),
    ("good", {"pon_threshold": 0}, "pon_threshold must be > 0 or None"),
    ("ls", {"epsilon": 1.0}, r"^loss ls: epsilon must be in \[0, 1\) \(the share of an object label spread over the "
                             r"object classes\), got 1.0$"),
    ("ls", {"epsilon": -0.1}, r"epsilon must be in \[0, 1\)"),
])
def test_wrong_types_and_values_are_refused(name, params, message):
    with pytest.raises(NoisysegError, match=message) as info:
        build_loss(name, **params)
    assert "\n" not in str(info.value)


def test_integer_parameters_are_accepted():
    assert build_loss("lncis", pon_threshold=6, ce_weight=2).params["pon_threshold"] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", available_losses())
def test_every_registered_loss_runs_on_cuda(name):
    z, y = batch(n=64)
    loss, stats = build_loss(name)(z.cuda().half(), y.cuda())
    assert loss.device.type == "cuda" and loss.dtype == torch.float32
    assert all(v.device.type == "cuda" for v in stats.values())
    assert loss.item() == pytest.approx(build_loss(name)(z.half().float(), y)[0].item(), rel=1e-5)
