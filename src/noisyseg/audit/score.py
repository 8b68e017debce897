"""Class probabilities of every annotation of a COCO file, from a trained model's RoI box head.

Each non-crowd annotation's ground-truth box is handed to the model as if it were a proposal: the image
and its boxes go through ``model.transform`` together (so the boxes are resized exactly as the image is),
then backbone -> ``roi_heads.box_roi_pool`` -> ``box_head`` -> ``box_predictor`` -> softmax over the K+1
classes. The RPN and the box regression are not used, so every annotation gets exactly one row.

The probabilities used to judge a label are the K foreground probabilities renormalised without the
background class (measured to rank wrong labels better than the K+1 version, FINDINGS.md §1). With
several checkpoints the renormalised probabilities of each model are averaged. :func:`score_folds` scores
out of sample: each fold's models (trained without that fold's images) score only that fold's annotations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from noisyseg.audit.flat import AuditData, as_audit_data
from noisyseg.data.coco import LabelMap
from noisyseg.errors import NoisysegError


def resolve_checkpoints(source: str | Path, checkpoints: Sequence[str] | None = None) -> list[Path]:
    """The checkpoint files named by a run folder or checkpoint file ``source`` and ``checkpoints``.

    ``source`` is a run folder or a ``.pt`` file; a run folder's names are resolved by
    :meth:`noisyseg.engine.run_folder.RunFolder.resolve_checkpoints`. Without ``checkpoints`` a run folder
    means its ``checkpoints/last.pt``. Each entry of ``checkpoints`` is a path, or a name looked up
    in the run's ``checkpoints/`` folder with or without ``.pt`` (``last``, ``ce_stage_end``,
    ``epoch_12``), or a glob pattern there (``epoch_*`` = every epoch snapshot, in epoch order).
    """
    from noisyseg.engine.run_folder import RunFolder

    source = Path(source)
    if not source.exists():
        raise NoisysegError(f"{source}: no such run folder or checkpoint file")
    if source.is_file():
        if checkpoints:
            raise NoisysegError(f"{source}: --checkpoint needs a run folder, not a checkpoint file")
        return [source]
    return RunFolder(source).resolve_checkpoints(checkpoints)


@dataclass
class AnnotationScores:
    """Per-annotation class probabilities of N scored annotations with K classes.

    Attributes:
        annotation_ids: (N,) int64, the annotations' ``id`` in file order (crowd annotations left out).
        image_ids: (N,) their ``image_id`` (int64 for the usual integer ids).
        given_labels: (N,) int64 in 0..K-1, the given ``category_id`` as a class index
            (``label_map.category_ids[given_labels[i]]`` is the category id).
        clean_labels: (N,) int64 in 0..K-1 from ``clean_category_id`` (the given label where an annotation
            has none), or None when no annotation of the file has ``clean_category_id``.
        pred_probs: (N, K) float64, foreground class probabilities renormalised without background; rows
            sum to 1. Averaged over the models when several were used.
        background_prob: (N,) float64, the probability of background (K+1-way softmax, model average).
        label_map: the class mapping (category ids and names) shared by the models and the file.
        checkpoints: the checkpoint files used.
        image_root: the folder the images were read from.
        seconds: wall time of the scoring pass (image reading included, model loading not).
    """

    annotation_ids: np.ndarray
    image_ids: np.ndarray
    given_labels: np.ndarray
    clean_labels: np.ndarray | None
    pred_probs: np.ndarray
    background_prob: np.ndarray
    label_map: LabelMap
    checkpoints: list[Path]
    image_root: Path
    seconds: float

    @property
    def annotations_per_second(self) -> float:
        return len(self.annotation_ids) / self.seconds if self.seconds > 0 else float("inf")


def scored_annotations(coco: dict, label_map: LabelMap, source: str | Path) -> list[dict]:
    """The annotations that an audit scores: every non-crowd one, in file order, with a unique ``id``.

    Raises :class:`NoisysegError` naming ``source`` for a missing or repeated annotation id, or a
    ``category_id`` outside ``label_map``.
    """
    from noisyseg.audit.flat import scored_positions

    return scored_positions(coco, label_map, source)[1]


def check_same_classes(coco: Any, label_map: LabelMap, data_path: str | Path, checkpoint: str | Path) -> None:
    """Raise a one-line error unless the file's categories (``coco``: a parsed file or an
    :class:`~noisyseg.audit.flat.AuditData`) are exactly the checkpoint's classes."""
    own = LabelMap.from_categories(coco["categories"] if isinstance(coco, dict) else coco.categories)
    if own.category_ids != label_map.category_ids:
        raise NoisysegError(f"{data_path}: categories {list(own.category_ids)} differ from the classes "
                            f"{list(label_map.category_ids)} of the model in {checkpoint}")


class _ImagesWithBoxes(torch.utils.data.Dataset):
    """Item i: (uint8 image (3, H, W), boxes (n_i, 4) float32 xyxy pixels, row indices (n_i,) int64).

    ``images``: (B,) indices into ``data``'s images; ``rows``: the annotation rows of all B images, grouped
    by image, image i's being ``rows[ends[i-1]:ends[i]]``; ``boxes``: (len(rows), 4) in the same order.
    """

    def __init__(self, data: Any, images: np.ndarray, rows: np.ndarray, ends: np.ndarray, boxes: np.ndarray,
                 image_root: Path, data_path: str | Path) -> None:
        self.data, self.images, self.rows, self.ends, self.boxes = data, images, rows, ends, boxes
        self.image_root, self.data_path = image_root, data_path

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        m = int(self.images[i])
        h, w = self.data.image_sizes[m].tolist()
        image = read_image(self.image_root / self.data.file_names[m], h, w, self.data_path)
        start, end = (int(self.ends[i - 1]) if i else 0), int(self.ends[i])
        return image, torch.from_numpy(self.boxes[start:end].copy()), torch.from_numpy(self.rows[start:end].copy())


def read_image(path: Path, height: int, width: int, data_path: str | Path) -> torch.Tensor:
    """The RGB image at ``path`` as a uint8 tensor (3, H, W), checked against the json's size."""
    from noisyseg.data.images import load_rgb

    if not path.exists():
        raise NoisysegError(f"{data_path}: image not found: {path} (set --image-root)")
    image = load_rgb(path)
    if tuple(image.shape[1:]) != (height, width):
        raise NoisysegError(f"{path}: image is {image.shape[2]}x{image.shape[1]} but {data_path} says "
                            f"{width}x{height}")
    return image


def _transpose(batch: list) -> tuple:
    return tuple(zip(*batch))


@torch.no_grad()
def box_head_probabilities(model: torch.nn.Module, images: list[torch.Tensor],
                           boxes: list[torch.Tensor]) -> torch.Tensor:
    """K+1-way class probabilities of given boxes, as the model's RoI box head sees them.

    Args:
        model: a torchvision Mask R-CNN in eval mode.
        images: B float images (3, H_b, W_b) in [0, 1] on the model's device, at their original size.
        boxes: B tensors (n_b, 4), xyxy pixel boxes in the coordinates of the original images.

    Returns:
        (sum n_b, K+1) float32 softmax probabilities, column 0 = background, rows in input order.
    """
    targets = [{"boxes": b.to(images[0].device, torch.float32)} for b in boxes]
    image_list, targets = model.transform(images, targets)  # resizes the boxes with the images
    features = model.backbone(image_list.tensors)
    proposals = [t["boxes"] for t in targets]
    pooled = model.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes)
    logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
    return torch.softmax(logits.float(), dim=1)


def foreground_probabilities(probs: np.ndarray) -> np.ndarray:
    """(N, K+1) probabilities with background in column 0 -> (N, K) renormalised over the K classes."""
    fg = probs[:, 1:].astype(np.float64)
    total = fg.sum(axis=1, keepdims=True)
    k = fg.shape[1]
    return np.divide(fg, total, out=np.full_like(fg, 1.0 / k), where=total > 0)


def score_annotations(
    checkpoints: Sequence[str | Path],
    coco: Any,
    data_path: str | Path,
    image_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
) -> AnnotationScores:
    """Class probabilities of every non-crowd annotation of ``coco`` (the parsed file at ``data_path``).

    Args:
        checkpoints: one or more noisyseg checkpoints with the same classes; their foreground
            probabilities are averaged.
        coco: the file's :class:`~noisyseg.audit.flat.AuditData`, or the parsed COCO json (checked with
            :func:`noisyseg.data.coco.load_coco`).
        data_path: the file ``coco`` came from (for error messages).
        image_root: folder of the images' ``file_name``; default the first checkpoint's
            ``data.image_root``.
        batch_size: images per forward pass.
        num_workers: data-loader processes reading images (0 = in this process).
    """
    from tqdm import tqdm

    from noisyseg.engine.predict import load_trained_model

    from noisyseg.engine.distributed import select_device

    if not checkpoints:
        raise NoisysegError("no checkpoint to score with")
    device = select_device(device, "device") if isinstance(device, str) else torch.device(device)
    models, label_map, root = [], None, None
    for ckpt in checkpoints:
        model, cfg, lm = load_trained_model(ckpt, device)
        if label_map is None:
            label_map, root = lm, Path(image_root if image_root is not None else cfg.data.image_root)
            check_same_classes(coco, label_map, data_path, ckpt)
        elif lm != label_map:
            raise NoisysegError(f"{ckpt}: its classes differ from those of {checkpoints[0]}")
        models.append(model)
    assert label_map is not None and root is not None
    if label_map.num_classes < 2:
        raise NoisysegError(f"{data_path}: an audit of class labels needs at least 2 classes, "
                            f"the model has {label_map.num_classes}")

    data = as_audit_data(coco, data_path)
    index = np.asarray(label_map.category_ids, dtype=np.int64)  # sorted ids: class i has id index[i]
    n = len(data)
    given = np.searchsorted(index, data.category_ids).astype(np.int64)
    clean = None
    if data.clean_category_ids is not None:
        clean = np.searchsorted(index, data.clean_category_ids).astype(np.int64)

    # the annotations grouped by image (images in file order, annotations in file order within one)
    rows = np.argsort(data.ann_image, kind="stable")
    images, counts = np.unique(data.ann_image[rows], return_counts=True)
    boxes = data.bbox[rows].astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy

    dataset = _ImagesWithBoxes(data, images, rows, np.cumsum(counts), boxes, root, data_path)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_transpose)
    fg_sum = np.zeros((n, label_map.num_classes), dtype=np.float64)
    bg_sum = np.zeros(n, dtype=np.float64)
    t0 = time.perf_counter()
    done = 0
    bar = tqdm(total=n, disable=not progress, unit="ann", desc="audit: scoring", dynamic_ncols=True)
    try:
        for batch_images, batch_boxes, batch_rows in loader:
            imgs = [im.to(device).float().div_(255) for im in batch_images]
            idx = torch.cat(batch_rows).numpy()
            for model in models:
                probs = box_head_probabilities(model, imgs, list(batch_boxes)).cpu().numpy()
                fg_sum[idx] += foreground_probabilities(probs)
                bg_sum[idx] += probs[:, 0]
            done += len(idx)
            bar.update(len(idx))
            bar.set_postfix(ann_per_s=f"{done / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    m = len(models)
    fg_sum /= m  # in place: at COCO size this (N, K) array is 550 MB
    bg_sum /= m
    return AnnotationScores(
        annotation_ids=data.ann_ids.copy(), image_ids=data.ann_image_ids,
        given_labels=given, clean_labels=clean, pred_probs=fg_sum, background_prob=bg_sum,
        label_map=label_map, checkpoints=[Path(c) for c in checkpoints], image_root=root,
        seconds=seconds,
    )


def score_folds(
    folds: Sequence[tuple[Sequence[str | Path], Sequence[Any]]],
    coco: Any,
    data_path: str | Path,
    **options: Any,
) -> AnnotationScores:
    """Out-of-sample scores: each fold's models score only the annotations of that fold's images.

    Args:
        folds: one ``(checkpoints, image_ids)`` pair per fold: the checkpoint files of models trained
            without those images, and the ``id`` of the images they score. Every image with a scored
            annotation must be in exactly one fold.
        coco, data_path: as for :func:`score_annotations`.
        options: the keyword arguments of :func:`score_annotations` (``image_root``, ``device``,
            ``batch_size``, ``num_workers``, ``progress``), used for every fold.

    Returns:
        The scores of every non-crowd annotation of ``coco`` in file order, as if one model had scored
        them (``checkpoints`` lists every fold's files, ``seconds`` is the sum of the folds' passes).
    """
    if not folds:
        raise NoisysegError("no fold to score with")
    fold_of: dict[Any, int] = {}
    for f, (_, image_ids) in enumerate(folds):
        for image_id in image_ids:
            if image_id in fold_of:
                raise NoisysegError(f"{data_path}: image {image_id!r} is in folds {fold_of[image_id]} and {f}")
            fold_of[image_id] = f
    data = as_audit_data(coco, data_path)
    image_ids = data.ann_image_ids
    parts, rows_of = [], []
    for f, (checkpoints, ids) in enumerate(folds):
        # image ids are int64 in a checked file: an id of another kind names no image of it
        wanted = [i for i in ids if type(i) is int and -(2**63) <= i < 2**63]
        rows = np.flatnonzero(np.isin(image_ids, np.asarray(wanted, dtype=np.int64)))
        rows_of.append(rows)
        parts.append(score_annotations(checkpoints, data.subset(rows), data_path, **options))
    for f, part in enumerate(parts[1:], 1):
        if part.label_map != parts[0].label_map:
            raise NoisysegError(f"{part.checkpoints[0]}: the classes of fold {f} differ from those of fold 0")
    covered = np.zeros(len(data), dtype=bool)
    for rows in rows_of:
        covered[rows] = True
    missing = np.flatnonzero(~covered)
    if len(missing):
        first = int(missing[0])
        raise NoisysegError(f"{data_path}: image {int(image_ids[first])!r} of annotation {int(data.ann_ids[first])} "
                            f"is in no fold ({len(missing)} annotations unscored)")
    merged = merge_scores(data, rows_of, parts)
    merged.seconds = sum(part.seconds for part in parts)  # the folds' passes ran one after another
    return merged


def merge_scores(data: AuditData, rows_of: Sequence[np.ndarray], parts: Sequence[AnnotationScores]) -> AnnotationScores:
    """One :class:`AnnotationScores` for every annotation of ``data``, in file order, from ``parts``: part
    f scored the annotations ``data.subset(rows_of[f])``. The row sets are disjoint and together cover
    ``data`` (the callers split it that way); the parts share their classes. ``seconds`` is the longest
    part's (passes that ran side by side); ``checkpoints`` lists each part's files once."""
    def gather(values: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(data), *values[0].shape[1:]), dtype=values[0].dtype)
        for rows, value in zip(rows_of, values):
            out[rows] = value
        return out

    clean = None
    if any(part.clean_labels is not None for part in parts):
        clean = gather([part.given_labels if part.clean_labels is None else part.clean_labels for part in parts])
    checkpoints = [c for part in parts for c in part.checkpoints]
    return AnnotationScores(
        annotation_ids=data.ann_ids.copy(), image_ids=data.ann_image_ids,
        given_labels=gather([part.given_labels for part in parts]), clean_labels=clean,
        pred_probs=gather([part.pred_probs for part in parts]),
        background_prob=gather([part.background_prob for part in parts]),
        label_map=parts[0].label_map, checkpoints=list(dict.fromkeys(checkpoints)),
        image_root=parts[0].image_root, seconds=max(part.seconds for part in parts),
    )
