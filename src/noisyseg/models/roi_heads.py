"""Mask R-CNN RoI heads whose box classification loss is an injected, swappable object.

Only the classification term of the box head changes (DESIGN.md §1). Everything else (sampling, box
regression, masks, inference, torchvision's target checks) is torchvision's own ``RoIHeads`` code:
:class:`NoisyLabelRoIHeads` runs ``RoIHeads.forward`` unchanged and then replaces its
``loss_classifier`` by the injected loss, computed on the same class logits and sampled labels. The loss
object can be swapped between epochs (``set_classification_loss``), which is how the stage-wise schedule
switches from cross-entropy to the task-specific loss.

**Ignored class labels.** A training target may carry ``class_ignored``, a bool tensor (G,) aligned with
its ``labels`` (G,): True marks an instance whose box and mask are trusted but whose class is not (the
audit's ``--fix --action ignore``). A sampled RoI matched to such an instance keeps its objectness,
box-regression and mask losses (the mask from the channel of its given label) but loses its class
supervision: its classification term is the object-vs-background cross-entropy

    F_i = -log(1 - p_i[0]) = -(logsumexp(z_i[1:]) - logsumexp(z_i)),

whatever the injected loss (:func:`noisyseg.losses.functional.foreground_loss_values`, the one
implementation, also used by the task-specific loss's ``ignore_confident``). With I the ignored sampled RoIs, R the others and N = |I| + |R| all sampled
RoIs of the batch, the classification loss is

    loss = (|R| / N) * injected(z_R, y_R) + sum_{i in I} F_i / N,

i.e. the injected loss (a mean over the RoIs it is given) still counts each RoI with weight 1/N. Without
``class_ignored``, or with no sampled RoI matched to an ignored instance, the loss is exactly the
injected loss on all N RoIs. ``last_loss_stats["ignored"]`` counts the ignored sampled RoIs whenever a
target carries ``class_ignored``.

**Class-agnostic heads** (``class_agnostic=True`` in the builders, an extension beyond the paper): the
box regressor and the mask head have one output channel shared by all classes, so a wrong class label
cannot pick a wrong box or mask channel. :class:`ClassAgnosticBoxPredictor` and
:class:`ClassAgnosticMaskPredictor` repeat that channel K+1 times in their output, so torchvision's
losses and inference (which pick the channel of a label) apply unchanged and the gradient of every
picked copy reaches the one shared channel.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads

from noisyseg.losses.functional import foreground_loss_values

# (logits (N, K+1), labels (N,) int64) -> (0-dim loss, the mean over the N RoIs; statistics to log)
ClassificationLoss = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


class ClassAgnosticBoxPredictor(FastRCNNPredictor):
    """Class scores (N, K+1) and one box-regression channel, repeated to (N, (K+1)*4) for torchvision.

    ``FastRCNNPredictor``'s constructor first draws a (K+1)-channel regressor, which is then replaced by
    the single-channel one; keeping that order keeps the random stream, so a seed gives the same initial
    weights as in earlier versions of noisyseg.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        return scores, deltas.repeat(1, self.num_classes)


class ClassAgnosticMaskPredictor(MaskRCNNPredictor):
    """Mask logits of one channel, presented as (N, K+1, M, M) for torchvision.

    Training: an expanded view (no copy in the forward; the backward of torchvision's per-label pick
    still allocates one (N, K+1, M, M) gradient). Evaluation: a contiguous copy, because torchvision's
    inference takes the sigmoid of the whole tensor and on a stride-0 view that kernel rounds differently
    in the last bit from the one-channel tensor.
    """

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__(in_channels, dim_reduced, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x)
        if self.training:
            return logits.expand(-1, self.num_classes, -1, -1)
        return logits.repeat(1, self.num_classes, 1, 1)


def _sampled_ignored(labels: list[Tensor], matched_idxs: list[Tensor], targets: list[dict[str, Tensor]]) -> Tensor | None:
    """(N,) bool: sampled RoI matched to an instance with ``class_ignored``; None if no target has the key.

    labels / matched_idxs: per image, the sampled RoIs' labels (0 = background) and matched GT indices.
    """
    if not any("class_ignored" in t for t in targets):
        return None
    flags = []
    for lab, idx, t in zip(labels, matched_idxs, targets):
        ignored = t.get("class_ignored")
        if ignored is None or ignored.numel() == 0:
            flags.append(torch.zeros_like(lab, dtype=torch.bool))
            continue
        if ignored.dtype != torch.bool or ignored.shape != t["labels"].shape:
            raise ValueError(
                f"target class_ignored must be a bool tensor of the labels' shape {tuple(t['labels'].shape)}, "
                f"got {ignored.dtype} of shape {tuple(ignored.shape)}"
            )
        # background RoIs carry matched index 0 too (torchvision clamps it), hence the label test
        flags.append(ignored[idx] & (lab > 0))
    return torch.cat(flags)


def _sampled_class_targets(labels: list[Tensor], matched_idxs: list[Tensor],
                           targets: list[dict[str, Tensor]]) -> Tensor | None:
    """(N, K+1) float32 soft class targets of the sampled RoIs: the matched instance's ``class_target``
    (K,) in columns 1..K for a foreground RoI, one-hot on background (column 0) otherwise; None when no
    target has the key (every target must then have it)."""
    if not any("class_target" in t for t in targets):
        return None
    rows = []
    for lab, idx, t in zip(labels, matched_idxs, targets):
        given = t.get("class_target")
        if given is None or given.ndim != 2 or given.shape[0] != t["labels"].shape[0]:
            raise ValueError(f"target class_target must be a (G, K) tensor for the G = {t['labels'].shape[0]} labels "
                             f"of every image, got {None if given is None else tuple(given.shape)}")
        foreground = lab > 0
        soft = torch.zeros(lab.shape[0], given.shape[1] + 1, dtype=torch.float32, device=lab.device)
        soft[:, 0] = (~foreground).float()
        if given.shape[0]:
            soft[:, 1:] = given[idx].to(soft) * foreground[:, None]
        rows.append(soft)
    return torch.cat(rows)


class NoisyLabelRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` whose box classification loss is the injected ``classification_loss``.

    After each training forward, ``last_loss_stats`` holds the loss's statistics (for the task-specific
    loss: the NEG/PSN/OS/PON partition counts as 0-dim tensors), plus ``"ignored"`` when targets carry
    ``class_ignored`` (see the module docstring), for the engine to log.
    """

    def __init__(self, *args, classification_loss: ClassificationLoss, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._set_up(classification_loss)

    def _set_up(self, classification_loss: ClassificationLoss) -> None:
        self.classification_loss = classification_loss
        self.last_loss_stats: dict[str, Tensor] = {}
        self._sampled: tuple[Tensor, Tensor | None, Tensor | None] | None = None

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, classification_loss: ClassificationLoss) -> "NoisyLabelRoIHeads":
        """New heads holding every attribute of ``heads`` (its modules, settings, matcher, sampler, coder).

        The attributes are adopted as they are, not re-derived from constructor arguments, so nothing a
        torchvision version adds to ``RoIHeads`` is lost. The module's own containers (submodules,
        parameters, buffers, hooks) are copied, so later changes to one object do not reach the other;
        the submodules themselves are shared.
        """
        new = cls.__new__(cls)
        for name, value in vars(heads).items():
            new.__dict__[name] = copy.copy(value) if isinstance(value, (dict, set, list)) else value
        new._set_up(classification_loss)
        return new

    def set_classification_loss(self, loss: ClassificationLoss) -> None:
        self.classification_loss = loss

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._sampled = (torch.cat(labels), _sampled_ignored(labels, matched_idxs, targets),
                         _sampled_class_targets(labels, matched_idxs, targets))
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        logits: list[Tensor] = []
        hook = self.box_predictor.register_forward_hook(lambda _module, _inputs, out: logits.append(out[0]))
        self._sampled = None
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            labels, ignored, soft = self._sampled
        finally:
            hook.remove()
            self._sampled = None
        losses["loss_classifier"] = self._classification_term(logits[0], labels, ignored, soft)
        return result, losses

    def _injected(self, logits: Tensor, labels: Tensor, soft: Tensor | None):
        """The injected loss on these RoIs; a loss that takes soft targets ("posterior") gets theirs."""
        if getattr(self.classification_loss, "needs_class_targets", False):
            return self.classification_loss(logits, labels, class_targets=soft)
        return self.classification_loss(logits, labels)

    def _classification_term(self, logits: Tensor, labels: Tensor, ignored: Tensor | None,
                             soft: Tensor | None = None) -> Tensor:
        """The loss of the module docstring; logits (N, K+1), labels (N,), ignored (N,) bool or None, soft
        (N, K+1) soft class targets or None."""
        if ignored is None:
            loss, self.last_loss_stats = self._injected(logits, labels, soft)
            return loss
        n = labels.numel()
        n_ignored = int(ignored.sum())
        if n_ignored == 0:
            loss, stats = self._injected(logits, labels, soft)
        else:
            kept = ~ignored
            loss = foreground_loss_values(logits[ignored]).sum() / n
            stats = {}
            if n_ignored < n:
                injected, stats = self._injected(logits[kept], labels[kept], None if soft is None else soft[kept])
                loss = injected * ((n - n_ignored) / n) + loss
        self.last_loss_stats = {**stats, "ignored": ignored.sum()}
        return loss
