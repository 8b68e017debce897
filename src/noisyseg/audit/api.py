"""The audit end to end: score, flag, write the table, summary and review page, optionally repair."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from noisyseg.audit import ACTIONS, FILTERS, NOISE_MATRIX_FILTERS
from noisyseg.audit.fix import repaired_file
from noisyseg.audit.issues import (IssueRows, LabelIssues, estimated_noise_matrix, find_issues, summary_data,
                                   summary_markdown, uniform_noise_matrix, write_table)
from noisyseg.errors import NoisysegError
from noisyseg.losses.transition import ESTIMATE, FROM_DATA
from noisyseg.utils.io import atomic_write_bytes

UNIFORM = "uniform"  # --transition uniform: one noise rate from the confident joint (uniform_noise_matrix)


@dataclass
class AuditResult:
    """What :func:`audit` found and wrote.

    Attributes:
        issues: per-annotation verdicts (arrays in file order; see :class:`LabelIssues`).
        rows: the issue table, one dict per scored annotation, most suspicious first (a read-only sequence
            whose dicts are made when read: see :class:`noisyseg.audit.issues.IssueRows`).
        summary: the content of summary.json.
        files: name -> path of every file written (empty when ``out_dir`` was None); the repaired file
            under "fix".
        fix_report: the ``info.audit`` block of the repaired file, when one was written.
    """

    issues: LabelIssues
    rows: IssueRows
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    fix_report: dict[str, Any] | None = None


def default_out_dir(source: str | Path) -> Path:
    """RUN/audit for a run folder; the checkpoint's run folder (or its own folder) + /audit otherwise."""
    from noisyseg.engine.run_folder import RunFolder

    source = Path(source)
    if source.is_dir():
        return source / "audit"
    run = RunFolder(source.parent.parent)
    return (run.path if source.parent == run.checkpoints_dir else source.parent) / "audit"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (ties a decisions file to the data it was made for)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    transition: str | None = None,
    top: int | None = None,
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
        out_dir: where label_issues.csv/.json, summary.md/.json, noise_matrix.json (the estimated transition
            matrix, for ``loss.params.transition``), review.html (with its crops in
            review_files/), contact_sheet.png and audit_manifest.json go; None writes nothing (the result
            is still returned).
        device: auto | cpu | cuda | cuda:N (:func:`noisyseg.engine.distributed.select_device`).
        num_workers: image-reading processes (0: read in this process).
        filter_by: cleanlab's ``find_label_issues`` rule, or a noise matrix rule: ``noise_posterior``,
            ``noise_budget``, ``noise_budget_learned``, ``noise_budget_trusted`` (see
            :func:`noisyseg.audit.issues.find_issues`).
        transition: with a noise matrix rule, where the matrix comes from (default ``"data"``: the
            audited file's own, from ``clean_category_id``, known for injected noise; ``"estimate"``: for
            real noise, cleanlab's confident joint of this audit's own scores, the matrix it writes to
            ``noise_matrix.json``; ``"uniform"``: for real noise too, one rate from that joint spread evenly
            (:func:`noisyseg.audit.issues.uniform_noise_matrix`); or a matrix file, e.g. an earlier audit's
            ``noise_matrix.json``).
        top: None puts every flagged annotation on the review page; K puts the K most suspicious there,
            flagged or not. ``sheet``: suspects on the contact sheet.
        fix: write the repaired file here (needs ``action``, one of relabel | ignore | drop).

    Every argument and every output path is checked before scoring: no output may be an input (the data
    file, a checkpoint, a run's config.yaml) or an existing file an audit did not write, and the output
    folder is locked for the whole audit (a second audit into it is a one-line error). Nothing is written
    unless the whole audit succeeded; the input file is never changed.
    """
    from noisyseg.audit.flat import AuditData
    from noisyseg.audit.outputs import (MANIFEST, Spool, check_folder_outputs, check_not_an_input,
                                        check_repaired_output, locked_folder, write_folder)
    from noisyseg.audit.review import (REVIEW_FILES, collect_suspects, contact_sheet, png_bytes,
                                       review_files)
    from noisyseg.audit.score import resolve_checkpoints, score_annotations, score_folds
    from noisyseg.engine.distributed import select_device
    from noisyseg.engine.run_folder import RunFolder

    if fix is not None:
        if action not in ACTIONS:
            raise NoisysegError(f"--fix needs --action {' | '.join(ACTIONS)}, got {action!r}")
    elif action is not None:
        raise NoisysegError("--action needs --fix OUT.json")
    _check_count(top, "--top", 0, allow_none=True)
    _check_count(sheet, "--sheet", 0)
    _check_count(batch_size, "--batch-size", 1)
    _check_count(num_workers, "--workers", 0)
    if filter_by not in FILTERS:
        raise NoisysegError(f"--filter-by {filter_by}: expected one of {', '.join(FILTERS)}")
    if transition is not None and filter_by not in NOISE_MATRIX_FILTERS:
        raise NoisysegError(f"--transition is used only with --filter-by {', '.join(NOISE_MATRIX_FILTERS)}")
    if filter_by in NOISE_MATRIX_FILTERS:
        transition = transition or FROM_DATA
    if (source is None) == (folds is None):
        raise NoisysegError("audit: give either a run folder or checkpoint, or folds")
    torch_device = select_device(device, "--device")
    fold_paths = [(resolve_checkpoints(run, checkpoints), ids) for run, ids in folds or []]
    paths = resolve_checkpoints(source, checkpoints) if source is not None else []

    # every file the audit reads, which no output may be
    inputs: list[tuple[str, str | Path]] = [("audited data file", data)]
    inputs += [("checkpoint", p) for p in [*paths, *(p for ps, _ in fold_paths for p in ps)]]
    runs = [RunFolder(run) for run in ([source] if source is not None else [run for run, _ in folds or []])
            if Path(run).is_dir()]
    runs += [r for r in map(RunFolder.of_checkpoint, [*paths, *(p for ps, _ in fold_paths for p in ps)]) if r]
    for folder in runs:
        inputs += [("run's config", folder.config_path), ("run's metrics", folder.record_path)]
    names = ["label_issues.csv", "label_issues.json", "summary.json", "summary.md", "noise_matrix.json", "review.html"]
    names += ["contact_sheet.png"] if sheet else []
    out = Path(out_dir) if out_dir is not None else None
    if fix is not None:
        own = [(f"audit's {n}", out / n) for n in [*names, MANIFEST]] if out is not None else []
        check_repaired_output(fix, [*inputs, *own], "--fix")
        if out is not None and Path(fix).resolve().is_relative_to((out / REVIEW_FILES).resolve()):
            raise NoisysegError(f"{fix}: --fix inside the audit's own page folder {out / REVIEW_FILES}; "
                                "choose another path")

    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(locked_folder(out))
        before = check_folder_outputs(out, names, [REVIEW_FILES], inputs) if out is not None else set()
        noise_matrix = None

        def read_matrix(coco: dict) -> None:
            """The noise matrix (checked before scoring, in the label map's class order) from the parsed json."""
            nonlocal noise_matrix
            from noisyseg.data.coco import LabelMap
            from noisyseg.losses.transition import transition_matrix

            names = LabelMap.from_categories(coco["categories"]).names
            noise_matrix = transition_matrix(transition, data, names, coco=coco)

        # the file as flat arrays; its parsed json (2.7 GB at COCO size) is freed inside load, after the noise
        # matrix is taken from it
        from_file = transition not in (None, ESTIMATE, UNIFORM)
        flat = AuditData.load(data, read_matrix if from_file else None)
        data_sha256 = file_sha256(data)
        options = {"image_root": image_root, "device": torch_device, "batch_size": batch_size,
                   "num_workers": num_workers, "progress": progress}
        if folds is not None:
            scores = score_folds(fold_paths, flat, data, **options)
        else:
            scores = score_annotations(paths, flat, data, **options)
        # the confident-joint estimate: the rule's T with --transition estimate, and noise_matrix.json
        estimate = estimated_noise_matrix(scores) if transition == ESTIMATE or out is not None else None
        if transition == ESTIMATE:  # real noise: the matrix of this audit's own confident joint
            noise_matrix = np.asarray(estimate["matrix"], dtype=np.float64)
        noise_rate = None
        if transition == UNIFORM:  # real noise: that joint's one noise rate, spread evenly
            noise_matrix, noise_rate = uniform_noise_matrix(scores)
        issues = find_issues(scores, filter_by, noise_matrix)
        rows = IssueRows(issues)
        # the large outputs wait on disk (unnamed temporary files in the output folder), not in memory
        spools = [stack.enter_context(contextlib.closing(Spool(out))) for _ in range(3)] if out is not None else []
        csv_out, json_out = (spools[0].writer(), spools[1].writer()) if spools else (None, None)
        audit_id = write_table(issues, {"data": str(data), "checkpoints": [str(p) for p in scores.checkpoints],
                                        "rule": issues.rule}, csv_out, json_out)
        summary = summary_data(issues, {"data": str(data), "data_sha256": data_sha256, "device": str(torch_device),
                                        "audit_id": audit_id,
                                        **({"transition": _matrix_source(transition, noise_rate)} if transition else {})})

        files: dict[str, Any] = {}
        if out is not None:
            files["label_issues.csv"] = csv_out.file
            files["label_issues.json"] = json_out.file
            files["summary.json"] = json.dumps(summary, indent=2).encode("utf-8")
            files["summary.md"] = summary_markdown(summary).encode("utf-8")
            files["noise_matrix.json"] = json.dumps(estimate, indent=1).encode("utf-8")
            info = {"id": audit_id, "folder": str(out.resolve()), "checkpoints": summary["checkpoints"],
                    "filter_by": filter_by}
            files.update(review_files(issues, flat, data, out, summary, info, data_sha256, top, spool=spools[2]))
            if sheet:
                suspects = collect_suspects(rows, flat, scores.image_root, data, sheet)
                files["contact_sheet.png"] = png_bytes(contact_sheet(suspects))
        del flat
        fix_text, fix_report = None, None
        if fix is not None:
            # the one step that needs the whole json: read again (the same bytes as audited) now that the
            # audit's arrays of the file are freed
            spool = stack.enter_context(contextlib.closing(Spool(None)))
            fix_text, fix_report = repaired_file(data, issues, action, data_sha256, {"data": str(data)}, spool)

        written: dict[str, Path] = {}
        if out is not None:
            written = write_folder(out, files, before)
        if fix_text is not None:
            check_not_an_input(fix, inputs, "--fix")  # unchanged since the check above, unless raced
            written["fix"] = atomic_write_bytes(fix, fix_text.read())
    return AuditResult(issues, rows, summary, written, fix_report)


def _matrix_source(transition: str, noise_rate: float | None = None) -> str:
    """Where a noise matrix rule's T came from, in words, for summary.json / summary.md (``noise_rate``: the
    uniform estimate's rate)."""
    if transition == FROM_DATA:
        return "data: the audited file's own matrix, counted from clean_category_id"
    if transition == ESTIMATE:
        return "estimate: cleanlab's calibrated confident joint of this audit's scores (noise_matrix.json)"
    if transition == UNIFORM:
        return (f"uniform: one noise rate, {noise_rate:.3f}, the confident joint's off-diagonal share, spread "
                "evenly over the other classes")
    return f"file: {transition}"


def _check_count(value: Any, option: str, least: int, allow_none: bool = False) -> None:
    """One-line error unless ``value`` is an int >= ``least`` (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise NoisysegError(f"{option} {value}: expected a whole number >= {least}")
