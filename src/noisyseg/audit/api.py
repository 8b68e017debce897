"""The audit end to end: score, flag, write the table, summary and review page, optionally repair."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from noisyseg.audit import ACTIONS
from noisyseg.audit.fix import repair
from noisyseg.audit.issues import LabelIssues, find_issues, issue_rows, rows_to_csv, summary_data, summary_markdown
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text


@dataclass
class AuditResult:
    """What :func:`audit` found and wrote.

    Attributes:
        issues: per-annotation verdicts (arrays in file order; see :class:`LabelIssues`).
        rows: the issue table, one dict per scored annotation, most suspicious first.
        summary: the content of summary.json.
        files: name -> path of every file written (empty when ``out_dir`` was None).
        fix_report: the ``info.audit`` block of the repaired file, when one was written.
    """

    issues: LabelIssues
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    fix_report: dict[str, Any] | None = None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NoisysegError(f"--device {device}: CUDA is not available here")
    return device


def default_out_dir(source: str | Path) -> Path:
    """RUN/audit for a run folder; the checkpoint's run folder (or its own folder) + /audit otherwise."""
    source = Path(source)
    if source.is_dir():
        return source / "audit"
    parent = source.parent
    return (parent.parent if parent.name == "checkpoints" else parent) / "audit"


def audit(
    source: str | Path | None,
    data: str | Path,
    *,
    checkpoints: Sequence[str] | None = None,
    folds: Sequence[tuple[str | Path, Sequence[Any]]] | None = None,
    image_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    filter_by: str = "prune_by_noise_rate",
    top: int = 100,
    sheet: int = 24,
    fix: str | Path | None = None,
    action: str | None = None,
    progress: bool = True,
) -> AuditResult:
    """Find the likely wrong class labels of a COCO file with a trained model; optionally repair them.

    Args:
        source: a run folder (its ``checkpoints/last.pt`` by default) or a checkpoint file.
        data: the COCO instance json to audit (usually the noisy training file).
        checkpoints: names or paths of checkpoints in the run folder (see
            :func:`noisyseg.audit.score.resolve_checkpoints`); several are averaged.
        folds: out-of-sample scoring instead of ``source`` (which must then be None): one
            ``(run folder, image ids)`` pair per fold, the run trained without those images scoring
            exactly their annotations (``checkpoints`` names the checkpoints of each run); see
            :func:`noisyseg.audit.score.score_folds`.
        image_root: folder of the images; default the checkpoint's ``data.image_root``.
        out_dir: where label_issues.csv/.json, summary.md/.json, review.html and contact_sheet.png go;
            None writes nothing (the result is still returned).
        filter_by: cleanlab's ``find_label_issues`` rule.
        top: suspects on the review page; ``sheet``: suspects on the contact sheet.
        fix: write the repaired file here (needs ``action``, one of relabel | ignore | drop).

    Nothing is written unless the whole audit succeeded; the input file is never changed.
    """
    from noisyseg.audit.review import collect_suspects, contact_sheet, png_bytes, review_html
    from noisyseg.audit.score import resolve_checkpoints, score_annotations, score_folds
    from noisyseg.data.coco import load_coco

    if fix is not None:
        if action not in ACTIONS:
            raise NoisysegError(f"--fix needs --action {' | '.join(ACTIONS)}, got {action!r}")
        if Path(fix).resolve() == Path(data).resolve():
            raise NoisysegError(f"{fix}: refusing to overwrite the audited input file; choose another output")
    elif action is not None:
        raise NoisysegError("--action needs --fix OUT.json")
    if top < 0 or sheet < 0 or batch_size < 1:
        raise NoisysegError("--top and --sheet must be >= 0 and --batch-size >= 1")
    if (source is None) == (folds is None):
        raise NoisysegError("audit: give either a run folder or checkpoint, or folds")
    fold_paths = [(resolve_checkpoints(run, checkpoints), ids) for run, ids in folds or []]
    paths = resolve_checkpoints(source, checkpoints) if source is not None else []
    coco = load_coco(data)
    device = resolve_device(device)
    options = {"image_root": image_root, "device": device, "batch_size": batch_size, "num_workers": num_workers,
               "progress": progress}
    if folds is not None:
        scores = score_folds(fold_paths, coco, data, **options)
    else:
        scores = score_annotations(paths, coco, data, **options)
    issues = find_issues(scores, filter_by)
    rows = issue_rows(issues)
    summary = summary_data(issues, {"data": str(data), "device": device})

    suspects = []
    if out_dir is not None:
        suspects = collect_suspects(rows, coco, scores.image_root, data, max(top, sheet))
    fix_text, fix_report = None, None
    if fix is not None:
        repaired, fix_report = repair(coco, issues, action, data, {"data": str(data)})  # changes coco
        fix_text = json.dumps(repaired, separators=(",", ":"))
        del repaired, coco

    files: dict[str, Path] = {}
    if out_dir is not None:
        out = Path(out_dir)
        table = {"data": str(data), "checkpoints": summary["checkpoints"], "rule": issues.rule,
                 "columns": list(rows[0]) if rows else [], "annotations": rows}
        files["label_issues.csv"] = atomic_write_text(out / "label_issues.csv", rows_to_csv(rows))
        files["label_issues.json"] = atomic_write_json(out / "label_issues.json", table)
        files["summary.json"] = atomic_write_json(out / "summary.json", summary, indent=2)
        files["summary.md"] = atomic_write_text(out / "summary.md", summary_markdown(summary))
        files["review.html"] = atomic_write_text(out / "review.html", review_html(suspects[:top], summary))
        if sheet:
            files["contact_sheet.png"] = atomic_write_bytes(out / "contact_sheet.png",
                                                            png_bytes(contact_sheet(suspects[:sheet])))
    if fix_text is not None:
        files["fix"] = atomic_write_text(fix, fix_text)
    return AuditResult(issues, rows, summary, files, fix_report)
