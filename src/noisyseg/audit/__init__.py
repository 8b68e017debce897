"""Find and repair wrong class labels in a COCO instance file with a trained noisyseg model.

``audit(run_or_checkpoint, data_json, out_dir=...)`` scores every non-crowd annotation with the model's
RoI box head, flags likely wrong labels with cleanlab, and writes label_issues.csv/.json, summary.md/.json,
review.html (an offline page to review every flagged annotation) and contact_sheet.png;
``fix_file(data_json, issues, out_json, action)`` writes a repaired copy with one action on every flag
(relabel | ignore | drop); ``apply_file(decisions, data_json, out_json)`` applies the decisions a reviewer
exported from review.html instead. Exports load lazily so ``import noisyseg.audit`` does not import torch.
"""

from __future__ import annotations

from typing import Any

# what --fix can do to a flagged annotation, and the flagging rules (filter_by): cleanlab's
# find_label_issues rules, noise_posterior (ours: the label's posterior under a noise matrix < 0.5) and
# noise_budget (ours: in each class, as many labels flagged, lowest posterior first, as the matrix says are wrong)
# and noise_budget_learned (noise_budget in the classes the model has learned, noise_posterior in the others)
# and noise_budget_trusted (noise_budget in the classes the model has learned and whose labels' largest source is
# the class itself, nothing flagged in the others)
ACTIONS = ("relabel", "ignore", "drop")
NOISE_POSTERIOR = "noise_posterior"
NOISE_BUDGET = "noise_budget"
NOISE_BUDGET_LEARNED = "noise_budget_learned"
NOISE_BUDGET_TRUSTED = "noise_budget_trusted"
SPARING_FILTERS = (NOISE_BUDGET_LEARNED, NOISE_BUDGET_TRUSTED)  # the budget rules that spare some classes
NOISE_MATRIX_FILTERS = (NOISE_POSTERIOR, NOISE_BUDGET, *SPARING_FILTERS)  # the rules that need a noise matrix
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence", *NOISE_MATRIX_FILTERS)

_EXPORTS = {
    "audit": "noisyseg.audit.api", "AuditResult": "noisyseg.audit.api",
    "fix_file": "noisyseg.audit.fix", "repair": "noisyseg.audit.fix",
    "apply_file": "noisyseg.audit.decisions", "apply_decisions": "noisyseg.audit.decisions",
    "read_decisions": "noisyseg.audit.decisions",
    "find_issues": "noisyseg.audit.issues", "LabelIssues": "noisyseg.audit.issues",
    "truth_metrics": "noisyseg.audit.issues", "auroc": "noisyseg.audit.issues",
    "average_precision": "noisyseg.audit.issues",
    "score_annotations": "noisyseg.audit.score", "score_folds": "noisyseg.audit.score",
    "AnnotationScores": "noisyseg.audit.score",
    "box_head_probabilities": "noisyseg.audit.score", "resolve_checkpoints": "noisyseg.audit.score",
}

__all__ = sorted([*_EXPORTS, "ACTIONS", "FILTERS"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'noisyseg.audit' has no attribute {name!r}")
