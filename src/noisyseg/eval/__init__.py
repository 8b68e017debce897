"""Evaluation: COCO AP (faster-coco-eval, equal to pycocotools) and result conversion."""

from noisyseg.eval.coco import evaluate, format_metrics_table
from noisyseg.eval.results import detections_to_coco

__all__ = ["detections_to_coco", "evaluate", "format_metrics_table"]
