import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import fastrcnn_loss

from noisyseg.models.roi_heads import box_regression_loss


def test_box_regression_loss_equals_torchvision_on_class_specific_deltas():
    g = torch.Generator().manual_seed(0)
    n, classes = 50, 6
    logits = torch.randn(n, classes, generator=g)
    deltas = torch.randn(n, classes * 4, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    targets = torch.randn(n, 4, generator=g)
    _, reference = fastrcnn_loss(logits, deltas, [labels[:20], labels[20:]], [targets[:20], targets[20:]])
    assert torch.allclose(box_regression_loss(deltas, labels, targets), reference)


def test_class_agnostic_deltas_use_the_single_channel():
    g = torch.Generator().manual_seed(1)
    deltas = torch.randn(10, 4, generator=g)
    labels = torch.tensor([0, 3, 1, 0, 2, 2, 0, 1, 0, 5])
    targets = torch.randn(10, 4, generator=g)
    pos = labels > 0
    expected = F.smooth_l1_loss(deltas[pos], targets[pos], beta=1 / 9, reduction="sum") / 10
    assert torch.allclose(box_regression_loss(deltas, labels, targets), expected)


def test_no_positive_rois_gives_zero_that_backpropagates():
    deltas = torch.randn(4, 12, requires_grad=True)
    loss = box_regression_loss(deltas, torch.zeros(4, dtype=torch.int64), torch.zeros(4, 4))
    loss.backward()
    assert loss.item() == 0 and torch.equal(deltas.grad, torch.zeros_like(deltas))
