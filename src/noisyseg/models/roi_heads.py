"""Mask R-CNN RoI heads whose box classification loss is an injected, swappable object.

Only the classification term of the box head changes (DESIGN.md §1); the box-regression and mask
losses are Mask R-CNN's. The loss object can be replaced between epochs (``set_classification_loss``),
which is how the stage-wise schedule switches from cross-entropy to the task-specific loss.

Optionally (``class_agnostic=True``, an extension beyond the paper) the box regressor and the mask head
have one output channel shared by all classes, so a wrong class label cannot pick the wrong mask or box
channel.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss

# (logits (N, K+1), labels (N,)) -> (scalar loss, statistics to log)
ClassificationLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


def box_regression_loss(box_regression: Tensor, labels: Tensor, regression_targets: Tensor) -> Tensor:
    """Smooth-L1 (beta 1/9) on the positive RoIs' own-class deltas, summed and divided by all N RoIs.

    box_regression: (N, C*4) deltas, C = K+1 class-specific channels or 1 when class-agnostic.
    labels: (N,) sampled RoI labels, 0 = background. regression_targets: (N, 4).
    """
    n = labels.numel()
    deltas = box_regression.reshape(n, -1, 4)
    pos = torch.where(labels > 0)[0]
    channel = labels[pos] if deltas.shape[1] > 1 else torch.zeros_like(pos)
    loss = F.smooth_l1_loss(deltas[pos, channel], regression_targets[pos], beta=1 / 9, reduction="sum")
    return loss / max(n, 1)


class NoisyLabelRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` with an injected classification loss (boxes and masks, no keypoints).

    After each training forward, ``last_loss_stats`` holds the loss's statistics (for the task-specific
    loss: the NEG/PSN/OS/PON partition counts as 0-dim tensors) for the engine to log.
    """

    def __init__(self, *args, classification_loss: ClassificationLoss, class_agnostic: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.classification_loss = classification_loss
        self.class_agnostic = class_agnostic
        self.last_loss_stats: dict[str, Tensor] = {}

    @classmethod
    def replacing(
        cls, heads: RoIHeads, classification_loss: ClassificationLoss, class_agnostic: bool = False
    ) -> "NoisyLabelRoIHeads":
        """Build from an existing torchvision ``RoIHeads``, sharing its modules and settings."""
        new = cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
            classification_loss=classification_loss,
            class_agnostic=class_agnostic,
        )
        return new

    def set_classification_loss(self, loss: ClassificationLoss) -> None:
        self.classification_loss = loss

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            return self._forward_train(features, proposals, image_shapes, targets)
        return self._forward_test(features, proposals, image_shapes)

    def _forward_train(self, features, proposals, image_shapes, targets):
        if targets is None:
            raise ValueError("targets are required in training mode")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        all_labels = torch.cat(labels)
        loss_classifier, stats = self.classification_loss(class_logits, all_labels)
        self.last_loss_stats = stats
        losses = {
            "loss_classifier": loss_classifier,
            "loss_box_reg": box_regression_loss(box_regression, all_labels, torch.cat(regression_targets)),
        }
        if self.has_mask():
            # masks are learned on positive RoIs only, from the channel of their (possibly noisy) label
            pos = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[i] for p, i in zip(proposals, pos)]
            pos_matched = [m[i] for m, i in zip(matched_idxs, pos)]
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
            gt_labels = [t["labels"] for t in targets]
            if self.class_agnostic:
                gt_labels = [torch.zeros_like(g) for g in gt_labels]
            gt_masks = [t["masks"] for t in targets]
            losses["loss_mask"] = maskrcnn_loss(mask_logits, mask_proposals, gt_masks, gt_labels, pos_matched)
        return [], losses

    def _forward_test(self, features, proposals, image_shapes):
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.class_agnostic:
            box_regression = box_regression.repeat(1, class_logits.shape[1])
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        result = [{"boxes": b, "labels": l, "scores": s} for b, l, s in zip(boxes, labels, scores)]
        if self.has_mask():
            mask_features = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
            mask_logits = self.mask_predictor(mask_features)
            channels = [torch.zeros_like(l) for l in labels] if self.class_agnostic else labels
            for r, probs in zip(result, maskrcnn_inference(mask_logits, channels)):
                r["masks"] = probs
        return result, {}
