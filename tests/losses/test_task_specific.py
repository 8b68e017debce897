import numpy as np
import pytest
import torch

import loss_reference as ref
from noisyseg.losses import reverse_cross_entropy, task_specific_loss


def _crafted():
    """Six RoIs, K = 3: two NEG, one PSN, two OS, one PON-candidate (foreground, confident elsewhere)."""
    z = torch.tensor([
        [4.0, 0.0, 0.0, 0.0],   # y=0            -> NEG
        [0.0, 3.0, 0.0, 0.0],   # y=0            -> NEG (the model says class 1: still CE)
        [5.0, 1.0, 0.0, 0.0],   # y=2, argmax 0  -> PSN
        [0.0, 4.0, 0.0, 0.0],   # y=1, argmax 1  -> OS
        [0.0, 1.0, 2.0, 0.0],   # y=2, argmax 2  -> OS
        [0.0, 9.0, 0.0, -1.0],  # y=3, CE ~ 10   -> PON when the threshold is 6
    ], dtype=torch.float64)
    y = torch.tensor([0, 0, 2, 1, 2, 3])
    return z, y


def test_each_roi_gets_its_term():
    z, y = _crafted()
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    rce = reverse_cross_entropy(z, y, reduction="none")
    per, counts = task_specific_loss(z, y, reduction="none", return_counts=True)
    assert torch.allclose(per[:3], ce[:3]) and torch.allclose(per[3:], rce[3:])
    assert {k: int(v) for k, v in counts.items()} == {"neg": 2, "psn": 1, "os": 3, "pon": 0}
    per, counts = task_specific_loss(z, y, reduction="none", pon_threshold=6.0, return_counts=True)
    assert per[5].item() == 0.0 and torch.allclose(per[3:5], rce[3:5])
    assert {k: int(v) for k, v in counts.items()} == {"neg": 2, "psn": 1, "os": 2, "pon": 1}


def test_weights_scale_their_terms():
    z, y = _crafted()
    base = task_specific_loss(z, y, reduction="none")
    scaled = task_specific_loss(z, y, reduction="none", ce_weight=2.0, robust_weight=0.5)
    assert torch.allclose(scaled[:3], 2 * base[:3]) and torch.allclose(scaled[3:], 0.5 * base[3:])


@pytest.mark.parametrize("robust, fn", [("rce", ref.rce), ("sce", ref.sce), ("gce", ref.gce), ("apl", ref.apl)])
def test_random_inputs_against_a_loop_over_rois(robust, fn):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(200, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (200,), generator=g)
    expected, sets = ref.task_specific(z.numpy(), y.numpy(), robust=fn, pon=4.0)
    per, counts = task_specific_loss(z, y, robust=robust, pon_threshold=4.0, reduction="none", return_counts=True)
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert {k: int(v) for k, v in counts.items()} == {s: sets.count(s) for s in ("neg", "psn", "os", "pon")}
    assert task_specific_loss(z, y, robust=robust, pon_threshold=4.0).item() == pytest.approx(expected.mean())


def test_mean_divides_by_all_rois_not_by_each_set():
    z, y = _crafted()
    total = task_specific_loss(z, y, reduction="sum")
    assert task_specific_loss(z, y).item() == pytest.approx(total.item() / 6)
    # adding a confident background RoI (near-zero CE) adds a RoI to N, so the mean shrinks by 6/7
    z2 = torch.cat([z, torch.tensor([[50.0, 0.0, 0.0, 0.0]], dtype=torch.float64)])
    y2 = torch.cat([y, torch.tensor([0])])
    assert task_specific_loss(z2, y2).item() == pytest.approx(total.item() / 7, rel=1e-12)


def test_robust_parameters_reach_the_robust_term():
    z, y = _crafted()
    a = task_specific_loss(z, y, robust="gce", q=0.9, reduction="none")
    np.testing.assert_allclose(a[3:].numpy(), ref.gce(z.numpy(), y.numpy(), 0.9)[3:], rtol=1e-10)
