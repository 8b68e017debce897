"""The two kinds of bench cell, each brought to its results row.

- A plain cell (``ce``, ``lncis``, ...): one training run on the cell's (noisy) training file.
- An audit method's cell (``lncis+fix:...``, :class:`noisyseg.bench.grid.FixPlan`): a first run, the audit
  of that run on its own training file, the repaired file, and a retrain on it. Its first run is the base
  method's cell (``runs/<base>/...``, trained there if missing, and trained again when results.csv records
  it but the run itself was not kept); ``runs/<base>+snapshots<N>/...`` when it averages epoch snapshots;
  ``runs/<base>+folds<K>/<noise>/seed<S>/fold<k>/`` for out-of-sample scoring, trained on
  ``folds/<base>+folds<K>/<noise>_seed<S>_fold<k>.json``, the file without fold k's images. The audit goes to
  ``audits/<method>/<noise>/seed<S>/`` (``bench_audit.json`` last, recording its inputs and seconds), the
  repaired file to ``fixed/<method>/<noise>_seed<S>.json``, the retrain to ``runs/<method>/<noise>/seed<S>/``.
  An interrupted audit cell reuses the finished first run, audits again when the audit's files are missing or
  stale, and resumes the retrain.

A cell with a results row is done. A cell without one is brought to its end by
:func:`noisyseg.engine.trainer.train_to_end` (trained, resumed, or its final checkpoint scored again).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from noisyseg.bench.grid import FIX_DEFAULTS, FixPlan, NoiseSetting, cell_config, fix_cell_configs, fix_plan
from noisyseg.bench.records import BenchFolder, sha256_of_file
from noisyseg.bench.report import AUDIT_TRUTH_FIELDS, cell_key, read_curve
from noisyseg.config import config_from_dict, differing_keys
from noisyseg.engine.run_folder import RunFolder
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_json, atomic_write_text, read_json


@dataclass(frozen=True)
class TrainFile:
    """A cell's training file: its path, the share of labels its noise changed and its sha256."""

    path: Path
    realised_rate: float
    sha256: str


def run_cell(bench: BenchFolder, method: str, setting: NoiseSetting, seed: int, base: dict, train_file: TrainFile,
             label: str) -> str:
    """Bring one cell to a results row; return what it took ("trained", "resumed", "re-evaluated",
    "already done")."""
    plan = fix_plan(method)
    if plan is not None:
        return _run_fix_cell(bench, plan, setting, seed, base, train_file, label)
    cfg = config_from_dict(cell_config(base, method, train_file.path, seed, clean=setting.kind == "clean"), source=f"bench[{method}/{setting.name}]")
    run_dir = bench.run_dir(method, setting.name, seed)
    cell_file = bench.cell_file(method, setting.name, seed)
    key = (method, setting.name, seed)
    identity = {"config": cfg.model_dump(mode="json"), "train_json_sha256": train_file.sha256}

    if _check_recorded(bench, run_dir, cell_file, identity, train_file.path, label):
        bench.drop_row(key)
    elif bench.row(key) is not None:
        return "already done"

    atomic_write_json(cell_file, identity, indent=1)
    outcome = _train_to_end(run_dir, cfg, label, bench.progress)
    row = result_row(method, setting, seed, outcome.metrics, outcome.train_seconds, train_file.realised_rate)
    bench.record(row, _cell_curve(run_dir, row, cfg.train.epochs), per_class_rows(row, outcome.metrics, dict(bench.class_counts)))
    return outcome.how


def _train_to_end(run_dir: Path, cfg, label: str, progress: bool):
    from noisyseg.engine.trainer import train_to_end

    return train_to_end(cfg, run_dir, progress=progress, label=label)


def _recorded_identity(cell_file: Path, run_dir: Path, expected: dict) -> dict | None:
    """What the cell's existing run was trained from (None when nothing was trained there yet)."""
    if cell_file.is_file():
        return read_json(cell_file, "bench cell record")
    run = RunFolder(run_dir)
    if run.config_path.is_file():  # a run made before cell records existed: compare its config
        return {"config": run.read_config_tree(), "train_json_sha256": expected["train_json_sha256"]}
    return None


def _check_recorded(bench: BenchFolder, run_dir: Path, cell_file: Path, identity: dict, train_json: Path,
                    label: str) -> bool:
    """Compare what a cell's existing run was trained from with ``identity``; on a difference refuse
    (``on_changed="error"``) or delete the run and its record and return True (``"retrain"``)."""
    found = _recorded_identity(cell_file, run_dir, identity)
    if found is None or found == identity:
        return False
    differ = differing_keys(found.get("config") or {}, identity["config"], ignore=())
    if found.get("train_json_sha256") != identity["train_json_sha256"]:
        differ.append(f"the contents of {train_json}")
    if bench.on_changed == "error":
        raise NoisysegError(f"{run_dir}: holds a run of another setup ({', '.join(differ)} differ); delete it "
                            f"or choose another -o")
    print(f"{label}: the run there was made with other settings ({', '.join(differ)}); training it again",
          flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    cell_file.unlink(missing_ok=True)
    return True


def result_row(method: str, setting: NoiseSetting, seed: int, metrics: dict, train_seconds: float,
               realised: float) -> dict:
    """A results.csv row of a cell from its final metrics."""
    return {"method": method, "noise": setting.name, "noise_kind": setting.kind, "noise_rate": setting.rate,
            "seed": seed, "mask_AP": metrics["segm"]["AP"], "mask_AP50": metrics["segm"]["AP50"],
            "mask_AP75": metrics["segm"]["AP75"], "box_AP": metrics["bbox"]["AP"],
            "box_AP50": metrics["bbox"]["AP50"], "box_AP75": metrics["bbox"]["AP75"],
            "train_seconds": round(train_seconds, 1), "realised_noise_rate": round(realised, 4)}


def per_class_rows(row: dict, metrics: dict, class_counts: dict[str, int]) -> list[dict]:
    """per_class.csv rows of a cell: mask and box AP of each class (empty where a class had no val object),
    with the class's annotation count in the clean training file."""
    method, noise, seed = cell_key(row)
    segm, bbox = metrics["segm"].get("per_class") or {}, metrics["bbox"].get("per_class") or {}
    return [{"method": method, "noise": noise, "seed": seed, "class": name, "train_count": class_counts.get(name, ""),
             "mask_AP": "" if segm[name] is None else segm[name],
             "box_AP": "" if bbox.get(name) is None else bbox[name]} for name in segm]


def _cell_curve(run_dir: Path, row: dict, epochs: int) -> list[dict]:
    """The val-AP curve of a cell's run, ending at the row's final AP."""
    method, noise, seed = cell_key(row)
    curve = read_curve(RunFolder(run_dir).log_records(), method, noise, seed)
    if not curve or curve[-1]["epoch"] != epochs:  # the final AP was scored outside the log
        curve.append({"method": method, "noise": noise, "seed": seed, "epoch": epochs,
                      "mask_AP": row["mask_AP"], "box_AP": row["box_AP"]})
    return curve


# ------------------------------------------------------------------------------------------ audit methods


def _run_fix_cell(bench: BenchFolder, plan: FixPlan, setting: NoiseSetting, seed: int, base: dict,
                  train_file: TrainFile, label: str) -> str:
    """An audit method's cell: first run (shared with the base method's cell when it can be), audit,
    repaired file, retrain, results row with the total compute and the audit's figures."""
    method = plan.spec
    train_json, sha = train_file.path, train_file.sha256
    key = (method, setting.name, seed)
    fixed_json = bench.fixed_file(method, setting.name, seed)
    first_tree, retrain_tree = fix_cell_configs(base, plan, train_json, fixed_json, seed)
    first_cfg = config_from_dict(first_tree, source=f"bench[{method}/{setting.name}, first run]")
    retrain_cfg = config_from_dict(retrain_tree, source=f"bench[{method}/{setting.name}, retrain]")
    first_dir = bench.out / "runs" / plan.first_run_dir / setting.name / f"seed{seed}"
    first_identity = {"config": first_cfg.model_dump(mode="json"), "train_json_sha256": sha}
    run_dir, cell_file = bench.run_dir(method, setting.name, seed), bench.cell_file(method, setting.name, seed)
    audit_dir = bench.audit_dir(method, setting.name, seed)
    plan_identity = {"config": retrain_cfg.model_dump(mode="json"), "first_run": first_identity,
                     "fix": plan.options()}

    found = read_json(cell_file, "bench cell record") if cell_file.is_file() else None
    if found is not None and {k: found.get(k) for k in plan_identity} != plan_identity:
        differ = _fix_differences(found, plan_identity, train_json)
        if bench.on_changed == "error":
            raise NoisysegError(f"{run_dir}: holds a run of another setup ({', '.join(differ)} differ); delete it "
                                f"or choose another -o")
        print(f"{label}: the cell was made with other settings ({', '.join(differ)}); running it again", flush=True)
        for folder in (run_dir, audit_dir):
            shutil.rmtree(folder, ignore_errors=True)
        fixed_json.unlink(missing_ok=True)
        cell_file.unlink(missing_ok=True)
        bench.drop_row(key)
        found = None
    elif bench.row(key) is not None:
        return "already done"

    # 1. the first run
    first_label = f"{label}: first run ({plan.base})"
    if plan.shares_base_cell:
        run_cell(bench, plan.base, setting, seed, base, train_file, label=first_label)
        base_row = bench.row((plan.base, setting.name, seed))
        first_seconds = _restore_base_run(first_dir, first_cfg, plan, base_row, first_label, bench.progress)
        sources = [(first_dir, None)]
    elif plan.folds is None:
        first_cell = bench.out / "cells" / plan.first_run_dir / setting.name / f"seed{seed}.json"
        _check_recorded(bench, first_dir, first_cell, first_identity, train_json, first_label)
        atomic_write_json(first_cell, first_identity, indent=1)
        first_seconds = _train_to_end(first_dir, first_cfg, first_label, bench.progress).train_seconds
        sources = [(first_dir, None)]
    else:
        sources, first_seconds = _train_folds(bench, plan, setting, seed, first_tree, train_json, first_dir,
                                              first_label)

    # 2. the audit and the repaired file
    audit_record = _audit_first_run(plan, sources, first_cfg, train_json, sha, audit_dir, fixed_json,
                                    f"{label}: audit", bench.progress)

    # 3. the retrain on the repaired file
    if found is not None and found.get("train_json_sha256") not in (None, audit_record["fixed_sha256"]):
        print(f"{label}: the repaired file changed since the retrain started; training it again", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    atomic_write_json(cell_file, {**plan_identity, "train_json_sha256": audit_record["fixed_sha256"]}, indent=1)
    outcome = _train_to_end(run_dir, retrain_cfg, f"{label}: retrain ({plan.retrain})", bench.progress)
    total = first_seconds + audit_record["seconds"] + outcome.train_seconds
    row = result_row(method, setting, seed, outcome.metrics, total, train_file.realised_rate)
    truth = audit_record.get("truth") or {}
    row.update({"audit_seconds": round(audit_record["seconds"], 1),
                "retrain_seconds": round(outcome.train_seconds, 1), "audit_n_flagged": audit_record["n_flagged"],
                **{field: truth.get(name, "") for field, name in AUDIT_TRUTH_FIELDS.items()}})
    bench.record(row, _cell_curve(run_dir, row, retrain_cfg.train.epochs), per_class_rows(row, outcome.metrics, dict(bench.class_counts)))
    return outcome.how


def _restore_base_run(first_dir: Path, first_cfg, plan: FixPlan, base_row: dict, label: str,
                      progress: bool) -> float:
    """Train the base cell's run again when its results row is recorded but the run is not on disk (a
    bench folder kept, as we commit ours, with its figures and without ``runs/``): the audit needs the
    model, and the cell is seeded, so the run is made again as it was (resumed if a previous attempt was
    cut short). Its row stays as recorded; a reproduced AP that differs from it is said, not hidden.

    Returns the training seconds of the run the audit reads, from its final record: the base row's time,
    or that of the run made again (on today's machine, like the audit and the retrain)."""
    run = RunFolder(first_dir)
    needed = [run.checkpoint(name) for name in plan.checkpoint_names(first_cfg.train.epochs)]
    record = run.final_record(first_cfg.train.epochs)
    if all(path.is_file() for path in needed) and record is not None:
        return float(record.get("train_seconds", base_row["train_seconds"]))
    print(f"{label}: recorded in results.csv, but {first_dir} does not hold the finished run; training it again "
          f"to audit it", flush=True)
    outcome = _train_to_end(first_dir, first_cfg, label, progress)
    recorded, again = float(base_row["mask_AP"]), float(outcome.metrics["segm"]["AP"])
    if round(again, 4) != round(recorded, 4):
        print(f"{label}: trained again it reaches mask AP {again:.2f}, recorded {recorded:.2f}; the audit uses the "
              f"new run, the results row stays", flush=True)
    return outcome.train_seconds


def _fix_differences(found: dict, expected: dict, train_json: Path) -> list[str]:
    """What differs between an audit cell's record and its plan, for a one-line message: config keys of
    either run (once), the first run's training file, the fix options."""
    differ = differing_keys(found.get("config") or {}, expected["config"], ignore=())
    first_found, first = found.get("first_run") or {}, expected["first_run"]
    differ += [k for k in differing_keys(first_found.get("config") or {}, first["config"], ignore=())
               if k not in differ]
    if first_found.get("train_json_sha256") != first["train_json_sha256"]:
        differ.append(f"the contents of {train_json}")
    differ += [f"fix {k}" for k in differing_keys(found.get("fix") or {}, expected["fix"], ignore=())]
    return differ


def _train_folds(bench: BenchFolder, plan: FixPlan, setting: NoiseSetting, seed: int, first_tree: dict,
                 train_json: Path, first_dir: Path, label: str) -> tuple[list[tuple[Path, list]], float]:
    """The K first runs of out-of-sample scoring, each on the training file without one fold's images
    (``folds/<first run>/<noise>_seed<S>_fold<k>.json``, run ``<first run dir>/fold<k>``); returns the
    (run folder, held-out image ids) of each fold and their summed training seconds."""
    from noisyseg.data.subsets import fold_image_ids, without_images

    coco = read_json(train_json, "training file")
    folds = fold_image_ids(coco, plan.folds, seed)
    sources, seconds = [], 0.0
    for k, held_out in enumerate(folds):
        data = json.dumps(without_images(coco, held_out)).encode("utf-8")
        fold_json = bench.out / "folds" / plan.first_run_dir / f"{setting.name}_seed{seed}_fold{k}.json"
        if not fold_json.is_file() or fold_json.read_bytes() != data:
            atomic_write_text(fold_json, data.decode("utf-8"))
        tree = json.loads(json.dumps(first_tree))
        tree["data"]["train_json"] = str(fold_json)
        cfg = config_from_dict(tree, source=f"bench[{plan.spec}/{setting.name}, fold {k}]")
        run_dir = first_dir / f"fold{k}"
        cell_file = bench.out / "cells" / plan.first_run_dir / setting.name / f"seed{seed}" / f"fold{k}.json"
        identity = {"config": cfg.model_dump(mode="json"), "train_json_sha256": hashlib.sha256(data).hexdigest()}
        fold_label = f"{label}, fold {k + 1}/{plan.folds}"
        _check_recorded(bench, run_dir, cell_file, identity, fold_json, fold_label)
        atomic_write_json(cell_file, identity, indent=1)
        seconds += _train_to_end(run_dir, cfg, fold_label, bench.progress).train_seconds
        sources.append((run_dir, held_out))
    return sources, seconds


def _audit_first_run(plan: FixPlan, sources: list[tuple[Path, list | None]], first_cfg, train_json: Path,
                     train_sha: str, audit_dir: Path, fixed_json: Path, label: str, progress: bool) -> dict:
    """Audit the first run(s) on the training file into ``audit_dir`` and write the repaired ``fixed_json``,
    unless ``bench_audit.json`` there shows that this was done from the same checkpoints, file and options
    and the repaired file is intact. ``sources``: one (run folder, None), or per fold (run folder, its
    held-out image ids). Returns the record: seconds (the whole audit's wall time), n_flagged, truth (the
    audit against clean_category_id, or None), fixed_sha256."""
    from noisyseg.audit import NOISE_MATRIX_FILTERS, audit
    from noisyseg.engine.distributed import torch_threads

    names = plan.checkpoint_names(first_cfg.train.epochs)
    checkpoints = {str(path): path for run, _ in sources for path in map(RunFolder(run).checkpoint, names)}
    inputs = {"checkpoints": {key: sha256_of_file(path) for key, path in checkpoints.items()},
              "train_json": str(train_json), "train_json_sha256": train_sha, "action": plan.action,
              "filter_by": plan.filter_by}
    if plan.transition != FIX_DEFAULTS["transition"]:  # audits recorded before the option keep their identity
        inputs["transition"] = plan.transition
    record_path = audit_dir / "bench_audit.json"
    if record_path.is_file() and fixed_json.is_file():
        record = read_json(record_path, "bench audit record")
        if record.get("inputs") == inputs and record.get("fixed_sha256") == sha256_of_file(fixed_json):
            print(f"{label}: done before ({record_path})", flush=True)
            return record
    runs = ", ".join(str(run) for run, _ in sources)
    print(f"{label}: scoring {train_json} with {', '.join(names)} of {runs}", flush=True)
    record_path.unlink(missing_ok=True)
    folds = [(run, held_out) for run, held_out in sources] if sources[0][1] is not None else None
    t0 = time.perf_counter()
    with torch_threads(first_cfg.train.threads):
        result = audit(None if folds else sources[0][0], train_json, checkpoints=names, folds=folds,
                       out_dir=audit_dir, device=first_cfg.train.device, batch_size=first_cfg.train.batch_size,
                       num_workers=0, filter_by=plan.filter_by, fix=fixed_json, action=plan.action,
                       transition=plan.transition if plan.filter_by in NOISE_MATRIX_FILTERS else None,
                       progress=progress)
    seconds = time.perf_counter() - t0
    record = {"inputs": inputs, "seconds": seconds, "n_flagged": result.summary["n_flagged"],
              "n_annotations": result.summary["n_annotations"], "truth": result.summary.get("truth"),
              "fix": result.fix_report and {k: v for k, v in result.fix_report.items() if k != "annotation_ids"},
              "fixed_sha256": sha256_of_file(fixed_json)}
    atomic_write_json(record_path, record, indent=1)
    return record
