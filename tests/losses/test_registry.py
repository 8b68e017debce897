import pytest
import torch

from noisyseg.errors import NoisysegError
from noisyseg.losses import available_losses, build_loss, cross_entropy, task_specific_loss


def test_registered_names():
    assert available_losses() == ["ce", "rce", "sce", "gce", "apl", "lncis"]


@pytest.mark.parametrize("name", available_losses())
def test_every_loss_builds_and_runs(name):
    loss = build_loss(name)
    z = torch.randn(20, 5, requires_grad=True)
    y = torch.randint(0, 5, (20,))
    value, stats = loss(z, y)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert (stats == {}) == (name != "lncis")
    assert loss.name == name and "reduction" not in loss.params


def test_params_are_resolved_and_forwarded():
    loss = build_loss("lncis", robust="sce", beta=0.5, pon_threshold=6.0)
    assert loss.params["robust"] == "sce" and loss.params["beta"] == 0.5 and loss.params["ce_weight"] == 1.0
    z, y = torch.randn(30, 4), torch.randint(0, 4, (30,))
    value, counts = loss(z, y)
    assert value.item() == pytest.approx(task_specific_loss(z, y, robust="sce", beta=0.5, pon_threshold=6.0).item())
    assert sum(int(c) for c in counts.values()) == 30
    assert build_loss("ce")(z, y)[0].item() == pytest.approx(cross_entropy(z, y).item())


@pytest.mark.parametrize("name, params, message", [
    ("focal", {}, "unknown loss 'focal'; available: ce, rce, sce, gce, apl, lncis"),
    ("sce", {"gamma": 1}, r"loss sce: unknown parameter\(s\) gamma; valid: alpha, beta, log_zero"),
    ("gce", {"q": 0}, r"q must be in \(0, 1\]"),
    ("gce", {"q": "big"}, "q must be a finite number"),
    ("lncis", {"robust": "mae"}, "robust must be one of rce, sce, gce, apl"),
    ("lncis", {"ce_weight": -1}, "ce_weight must be >= 0"),
    ("rce", {"log_zero": 1.0}, "log_zero must be negative"),
    ("lncis", {"pon_threshold": 0}, "pon_threshold must be > 0"),
])
def test_bad_names_and_parameters(name, params, message):
    with pytest.raises(NoisysegError, match=message):
        build_loss(name, **params)
