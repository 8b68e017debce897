"""NoisyLabelRoIHeads: torchvision's RoIHeads with an injected classification loss and ignore-class targets."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss

from noisyseg.losses import build_loss
from noisyseg.models import NoisyLabelRoIHeads, maskrcnn_tiny
from noisyseg.losses import foreground_loss_values

SIZE = 64
ROIS = 64


def _inputs(seed=0, n_images=2, n_proposals=200):
    """FPN-like features, random proposals and 3 GT instances per image (boxes, labels 1..3, box masks)."""
    g = torch.Generator().manual_seed(seed)
    features = {str(i): torch.randn(n_images, 64, SIZE // s, SIZE // s, generator=g)
                for i, s in enumerate((4, 8, 16, 32))}
    proposals, targets = [], []
    for _ in range(n_images):
        xy = torch.rand(n_proposals, 2, generator=g) * SIZE * 0.7
        wh = 6 + torch.rand(n_proposals, 2, generator=g) * SIZE * 0.4
        proposals.append(torch.cat([xy, (xy + wh).clamp(max=SIZE)], dim=1))
        boxes = torch.tensor([[4.0, 6, 30, 28], [30, 30, 60, 58], [10, 36, 34, 62]])
        masks = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        labels = torch.randint(1, 4, (3,), generator=g)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return features, proposals, [(SIZE, SIZE)] * n_images, targets


def _heads(loss=None, class_agnostic=False):
    torch.manual_seed(0)
    return maskrcnn_tiny(num_classes=3, rois_per_image=ROIS, class_agnostic=class_agnostic,
                         classification_loss=loss).roi_heads


def _stock_like(h: RoIHeads) -> RoIHeads:
    """torchvision's own RoIHeads over the same modules, built from MaskRCNN's default settings."""
    return RoIHeads(h.box_roi_pool, h.box_head, h.box_predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                    batch_size_per_image=ROIS, positive_fraction=0.25, bbox_reg_weights=None, score_thresh=0.05,
                    nms_thresh=0.5, detections_per_img=100, mask_roi_pool=h.mask_roi_pool, mask_head=h.mask_head,
                    mask_predictor=h.mask_predictor)


def _train_losses(heads, inputs, seed=7):
    heads.train()
    torch.manual_seed(seed)  # the RoI sampler draws from the global generator
    return heads(*inputs)[1]


def _exact_ce(logits, labels):
    return F.cross_entropy(logits, labels), {}


def test_with_torchvisions_cross_entropy_the_heads_are_exactly_stock_roi_heads():
    heads = _heads(_exact_ce)
    stock = _stock_like(heads)
    inputs = _inputs()
    ours, theirs = _train_losses(heads, inputs), _train_losses(stock, inputs)
    assert set(ours) == set(theirs) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    heads.eval(), stock.eval()
    with torch.no_grad():
        ours, theirs = heads(*inputs[:3])[0], stock(*inputs[:3])[0]
    assert sum(len(o["boxes"]) for o in ours) > 0
    for o, t in zip(ours, theirs):
        assert set(o) == set(t) == {"boxes", "labels", "scores", "masks"}
        for k in o:
            assert torch.equal(o[k], t[k]), k


def test_with_noisysegs_ce_loss_the_losses_are_stock_up_to_summation_order():
    # noisyseg's CE sums -log p_y and divides by N; F.cross_entropy's mean reduction accumulates in
    # another order, so the classifier term may differ in the last bit (about 1e-7 relative) and only there
    heads = _heads(build_loss("ce"))
    inputs = _inputs(seed=1)
    ours, theirs = _train_losses(heads, inputs), _train_losses(_stock_like(heads), inputs)
    assert torch.equal(ours["loss_box_reg"], theirs["loss_box_reg"])
    assert torch.equal(ours["loss_mask"], theirs["loss_mask"])
    assert torch.allclose(ours["loss_classifier"], theirs["loss_classifier"], rtol=1e-6, atol=0)
    assert heads.last_loss_stats == {}


def test_from_roi_heads_keeps_every_attribute_of_the_stock_heads():
    stock = _stock_like(_heads())
    stock.setting_of_a_future_torchvision = ("kept", 3)  # adopted generically, not by a list of names
    adopted = NoisyLabelRoIHeads.from_roi_heads(stock, build_loss("ce"))
    before = vars(stock)
    for name, value in before.items():
        assert name in vars(adopted), name
        if isinstance(value, (dict, set, list)):
            assert vars(adopted)[name] == value and vars(adopted)[name] is not value, name
        else:
            assert vars(adopted)[name] is value, name
    assert adopted.proposal_matcher is stock.proposal_matcher and adopted.box_coder is stock.box_coder
    assert list(adopted.state_dict()) == list(stock.state_dict())
    # the containers are copies: replacing a submodule of one leaves the other alone
    adopted.mask_head = torch.nn.Identity()
    assert not isinstance(stock.mask_head, torch.nn.Identity)


def test_the_loss_can_be_swapped_between_epochs():
    heads = _heads(build_loss("ce"))
    inputs = _inputs()
    _train_losses(heads, inputs)
    assert heads.last_loss_stats == {}
    heads.set_classification_loss(build_loss("lncis"))
    _train_losses(heads, inputs)
    stats = heads.last_loss_stats
    assert set(stats) == {"neg", "psn", "os", "pon"} and sum(int(v) for v in stats.values()) == 2 * ROIS


# ------------------------------------------------------------------------------------ class-agnostic


def _single_channel_reference(heads, inputs, seed=7):
    """The class-agnostic heads' losses and detections computed straight from the single channels."""
    features, proposals, shapes, targets = inputs
    heads.train()
    torch.manual_seed(seed)
    props, matched, labels, reg_targets = heads.select_training_samples(proposals, targets)
    x = heads.box_head(heads.box_roi_pool(features, props, shapes)).flatten(1)
    deltas = heads.box_predictor.bbox_pred(x)  # (N, 4): the one regressor
    all_labels, reg = torch.cat(labels), torch.cat(reg_targets)
    pos = all_labels > 0
    box_loss = F.smooth_l1_loss(deltas[pos], reg[pos], beta=1 / 9, reduction="sum") / all_labels.numel()
    pos_idx = [torch.where(l > 0)[0] for l in labels]
    mask_props = [p[i] for p, i in zip(props, pos_idx)]
    base = heads.mask_predictor
    mask_logits = base.mask_fcn_logits(base.relu(base.conv5_mask(heads.mask_head(heads.mask_roi_pool(features, mask_props, shapes)))))
    zeros = [torch.zeros_like(t["labels"]) for t in targets]  # channel 0 for every class
    mask_loss = maskrcnn_loss(mask_logits, mask_props, [t["masks"] for t in targets], zeros,
                              [m[i] for m, i in zip(matched, pos_idx)])
    heads.eval()
    with torch.no_grad():
        x = heads.box_head(heads.box_roi_pool(features, proposals, shapes)).flatten(1)
        scores, one = heads.box_predictor.cls_score(x), heads.box_predictor.bbox_pred(x)
        boxes, det_scores, det_labels = heads.postprocess_detections(scores, one.repeat(1, scores.shape[1]), proposals, shapes)
        m = heads.mask_head(heads.mask_roi_pool(features, boxes, shapes))
        m = base.mask_fcn_logits(base.relu(base.conv5_mask(m)))
        masks = maskrcnn_inference(m, [torch.zeros_like(l) for l in det_labels])
    return box_loss, mask_loss, boxes, det_scores, det_labels, masks


def test_class_agnostic_heads_share_one_box_and_mask_channel_and_match_a_direct_computation():
    heads = _heads(build_loss("ce"), class_agnostic=True)
    assert heads.box_predictor.bbox_pred.out_features == 4
    assert heads.box_predictor.cls_score.out_features == 4
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 1
    inputs = _inputs(seed=2)
    box_loss, mask_loss, boxes, scores, labels, masks = _single_channel_reference(heads, inputs)
    losses = _train_losses(heads, inputs)
    assert torch.equal(losses["loss_box_reg"], box_loss) and torch.equal(losses["loss_mask"], mask_loss)
    heads.zero_grad()
    (losses["loss_box_reg"] + losses["loss_mask"]).backward()
    for p in (heads.box_predictor.bbox_pred.weight, heads.mask_predictor.mask_fcn_logits.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    heads.eval()
    with torch.no_grad():
        out = heads(*inputs[:3])[0]
    assert sum(len(b) for b in boxes) > 0
    for o, b, s, l, m in zip(out, boxes, scores, labels, masks):
        assert torch.equal(o["boxes"], b) and torch.equal(o["scores"], s) and torch.equal(o["labels"], l)
        assert torch.equal(o["masks"], m)


# ------------------------------------------------------------------------------------ ignored classes


def _sampled(heads, inputs, seed=7):
    """The sampled RoIs' labels (N,), matched GT indices per image and class logits (N, K+1)."""
    features, proposals, shapes, targets = inputs
    torch.manual_seed(seed)
    props, matched, labels, _ = RoIHeads.select_training_samples(heads, proposals, targets)
    logits = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, props, shapes)))[0]
    return torch.cat(labels), matched, logits


@pytest.mark.parametrize("loss_name", ["ce", "lncis"])
def test_ignored_instances_get_only_the_object_vs_background_term(loss_name):
    loss = build_loss(loss_name)
    heads = _heads(loss)
    features, proposals, shapes, targets = _inputs(seed=3)
    plain = _train_losses(heads, (features, proposals, shapes, targets))
    flagged = [dict(t, class_ignored=torch.tensor(flags)) for t, flags in
               zip(targets, ([True, False, False], [False, True, True]))]
    inputs = (features, proposals, shapes, flagged)
    ours = _train_losses(heads, inputs)

    labels, matched, logits = _sampled(heads, inputs)
    gt_ignored = torch.cat([torch.tensor(flags)[m] for flags, m in
                            zip(([True, False, False], [False, True, True]), matched)])
    ignored = gt_ignored & (labels > 0)
    n, n_ignored = labels.numel(), int(ignored.sum())
    assert 0 < n_ignored < int((labels > 0).sum())
    p_background = torch.softmax(logits.double(), dim=1)[:, 0]
    object_term = -torch.log1p(-p_background[ignored]).sum() / n
    injected, _ = loss(logits[~ignored], labels[~ignored])
    expected = injected.double() * (n - n_ignored) / n + object_term
    assert torch.allclose(ours["loss_classifier"].double(), expected, rtol=1e-6, atol=0)
    # box regression and masks still learn from every positive RoI, with the given label's channel
    assert torch.equal(ours["loss_box_reg"], plain["loss_box_reg"])
    assert torch.equal(ours["loss_mask"], plain["loss_mask"])
    assert int(heads.last_loss_stats["ignored"]) == n_ignored
    if loss_name == "lncis":
        assert sum(int(v) for v in heads.last_loss_stats.values()) == n


def test_without_ignored_instances_the_loss_is_bit_identical():
    heads = _heads(build_loss("lncis"))
    features, proposals, shapes, targets = _inputs(seed=4)
    plain = _train_losses(heads, (features, proposals, shapes, targets))
    plain_stats = dict(heads.last_loss_stats)
    none_set = [dict(t, class_ignored=torch.zeros(3, dtype=torch.bool)) for t in targets]
    ours = _train_losses(heads, (features, proposals, shapes, none_set))
    for k in plain:
        assert torch.equal(ours[k], plain[k]), k
    assert heads.last_loss_stats == {**plain_stats, "ignored": 0}


def test_every_positive_ignored_leaves_only_background_to_the_injected_loss():
    heads = _heads(build_loss("lncis"))
    features, proposals, shapes, targets = _inputs(seed=5)
    all_set = [dict(t, class_ignored=torch.ones(3, dtype=torch.bool)) for t in targets]
    losses = _train_losses(heads, (features, proposals, shapes, all_set))
    stats = {k: int(v) for k, v in heads.last_loss_stats.items()}
    assert stats["psn"] == stats["os"] == stats["pon"] == 0
    assert stats["neg"] + stats["ignored"] == 2 * ROIS and stats["ignored"] > 0
    assert torch.isfinite(losses["loss_classifier"])


def test_foreground_loss_is_minus_log_one_minus_p_background():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 5, generator=g) * 4
    expected = -torch.log1p(-torch.softmax(logits.double(), 1)[:, 0])
    assert torch.allclose(foreground_loss_values(logits).double(), expected, rtol=1e-5, atol=1e-6)
    assert foreground_loss_values(logits.half()).dtype == torch.float32
    assert torch.isfinite(foreground_loss_values(torch.tensor([[80.0, -80.0, -80.0]])))


def test_class_ignored_must_be_a_bool_tensor_aligned_with_labels():
    heads = _heads()
    features, proposals, shapes, targets = _inputs()
    bad = [dict(t, class_ignored=torch.tensor([1, 0, 0])) for t in targets]
    with pytest.raises(ValueError, match=r"class_ignored must be a bool tensor of the labels' shape \(3,\)"):
        _train_losses(heads, (features, proposals, shapes, bad))


def test_heads_built_directly_equal_heads_adopted_from_stock():
    adopted = _heads(build_loss("lncis"))
    h = adopted
    direct = NoisyLabelRoIHeads(h.box_roi_pool, h.box_head, h.box_predictor, 0.5, 0.5, ROIS, 0.25, None, 0.05, 0.5,
                                100, h.mask_roi_pool, h.mask_head, h.mask_predictor,
                                classification_loss=build_loss("lncis"))
    inputs = _inputs(seed=6)
    a, b = _train_losses(adopted, inputs), _train_losses(direct, inputs)
    assert all(torch.equal(a[k], b[k]) for k in a) and adopted.last_loss_stats == direct.last_loss_stats
