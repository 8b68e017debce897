"""Running a bench: every cell (method x noise setting x seed) trained once, resumed, or re-scored.

Layout of a bench folder ``OUT``:

- ``runs/<method>/<noise>/seed<S>/``: the cell's training run (config.yaml, checkpoints, metrics);
- ``cells/<method>/<noise>/seed<S>.json``: what the cell was trained from (its full config and the
  sha256 of its training file), so a later call can tell a run it may continue from a different one;
- ``noisy/<noise>_seed<S>.json``: the noisy training files (seeded, so they are made again identically);
- for an audit method (``lncis+fix:...``, :class:`noisyseg.bench.grid.FixPlan`): its first run is the base
  method's cell (``runs/<base>/...``, trained there if missing, and trained again when results.csv
  records it but the run itself was not kept; ``runs/<base>+snapshots<N>/...`` when it
  averages epoch snapshots; ``runs/<base>+folds<K>/<noise>/seed<S>/fold<k>/`` for out-of-sample scoring,
  trained on ``folds/<base>+folds<K>/<noise>_seed<S>_fold<k>.json``, the file without fold k's images),
  ``audits/<method>/<noise>/seed<S>/`` the audit of that run on its own
  training file (label_issues, summary, review page, contact sheet; ``bench_audit.json`` last, recording
  its inputs and seconds), ``fixed/<method>/<noise>_seed<S>.json`` the repaired file, and
  ``runs/<method>/<noise>/seed<S>/`` the retrain on it. An interrupted audit cell reuses the finished
  first run, audits again when the audit's files are missing or stale, and resumes the retrain;
- ``results.csv``, ``curves.csv``, ``table.md``, ``ap_vs_noise.png`` (see :mod:`noisyseg.bench.report`)
  and ``command.txt`` (every distinct bench command that trained in the folder).

A cell with a results row is done. A cell without one is resumed from its checkpoint, or, when it
finished training but its final AP is missing (say ``metrics.json`` lost it), evaluated from its
checkpoint. Several bench processes may share a folder (other seeds, other GPUs): the csv files are
re-read and rewritten under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from noisyseg.bench.grid import (
    FixPlan,
    NoiseSetting,
    cell_config,
    check_methods,
    check_noise,
    check_seeds,
    fix_cell_configs,
    fix_plan,
    method_dir,
    parse_noise_setting,
)
from noisyseg.bench.report import (
    AUDIT_TRUTH_FIELDS,
    cell_key,
    read_curve,
    read_rows,
    write_data,
    write_report,
)
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_json, atomic_write_text, ensure_output_dir, read_json

#: What to do with a cell whose folder holds a run of another setup (config or training data):
#: "error" refuses with one line (the bench), "retrain" deletes that run and trains again (the demo).
ON_CHANGED = ("error", "retrain")


def run_dir_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The training run folder of one cell."""
    return Path(out) / "runs" / method_dir(method) / noise / f"seed{seed}"


def _cell_file(out: Path, method: str, noise: str, seed: int) -> Path:
    return Path(out) / "cells" / method_dir(method) / noise / f"seed{seed}.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_bench(config: Any, methods: Sequence[str], noise: Sequence[NoiseSetting | str], seeds: Sequence[int],
              out_dir: str | Path, *, asym_preset: str = "supercategory", overrides: list[str] | None = None,
              progress: bool = True, on_changed: str = "error", write_tables: bool = True,
              tag: str = "bench") -> list[dict]:
    """Train and score every cell of ``methods`` x ``noise`` x ``seeds`` into ``out_dir``; return all rows.

    Args:
        config: the base config: a YAML path (its train set is the clean one that noise is added to), a
            :class:`noisyseg.config.Config`, or a config tree (dict) as read from YAML.
        methods: method specs, names from :data:`noisyseg.bench.METHODS` with optional ``:KEY=VALUE``
            loss parameters (``lncis:log_zero=-4``).
        noise: noise settings (:class:`NoiseSetting` or strings such as ``clean``, ``sym0.4``).
        seeds: integers >= 0; each seeds the noisy file and the run.
        out_dir: the bench folder (see the module docstring).
        asym_preset: the asymmetric noise preset, any name of :data:`noisyseg.noise.presets.PRESETS`.
        overrides: ``key=value`` overrides of the base config.
        progress: progress bars while training.
        on_changed: see :data:`ON_CHANGED`.
        write_tables: also rewrite ``table.md`` and ``ap_vs_noise.png`` (the demo writes its own report).
        tag: the prefix of printed lines.

    Returns:
        Every row of ``results.csv`` after the call (dicts with :data:`noisyseg.bench.CSV_FIELDS`).

    Raises:
        NoisysegError: before any work, for an unknown or repeated method, noise setting or seed, an
            unknown preset, a base config or cell config that does not validate, an output folder that
            cannot be written, a noisy file or run of another setup (with ``on_changed="error"``).
    """
    from noisyseg.noise.presets import PRESETS

    methods, seeds = list(methods), list(seeds)
    noise = [parse_noise_setting(n) if isinstance(n, str) else n for n in noise]
    check_methods(methods)
    if not noise:
        raise NoisysegError("--noise: no setting given")
    check_noise(noise)
    check_seeds(seeds)
    if asym_preset not in PRESETS:
        raise NoisysegError(f"--asym-preset: unknown preset {asym_preset!r}; available: {', '.join(PRESETS)}")
    if on_changed not in ON_CHANGED:
        raise ValueError(f"on_changed must be one of {ON_CHANGED}, got {on_changed!r}")
    out = ensure_output_dir(out_dir, "bench folder")
    base_cfg = _base_config(config, overrides)
    base = base_cfg.model_dump(mode="json")
    clean_json = Path(base_cfg.data.train_json)
    _check_cell_configs(base, methods, seeds, clean_json)  # every cell validated before any work

    out.mkdir(parents=True, exist_ok=True)
    if isinstance(config, (str, Path)):
        record_command(out, _command_text(config, methods, noise, seeds, asym_preset, overrides, out))
    train_files = _train_files(clean_json, noise, seeds, asym_preset, out, on_changed, tag)

    cells = [(m, n, s) for n in noise for m in methods for s in seeds]
    counts = {"trained": 0, "resumed": 0, "re-evaluated": 0, "already done": 0}
    t0 = time.time()
    for i, (method, setting, seed) in enumerate(cells, 1):
        what = _run_cell(out, i, len(cells), method, setting, seed, base, train_files[(setting.name, seed)],
                         methods, noise, on_changed, write_tables, progress, tag)
        counts[what] += 1
    rows = _record(out, None, [], methods, noise, write_tables)
    done = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    print(f"[{tag}] {len(cells)} cells in {out}: {done} ({time.time() - t0:.0f} s this call)", flush=True)
    if write_tables:
        print((out / "table.md").read_text(), flush=True)
    return rows


def report_bench(out_dir: str | Path, methods: Sequence[str], noise: Sequence[NoiseSetting | str]) -> list[dict]:
    """Train nothing: rewrite ``curves.csv`` (from the runs still in the folder), ``table.md`` and
    ``ap_vs_noise.png`` from ``results.csv``; return its rows."""
    out = Path(out_dir)
    methods = list(methods)
    noise = [parse_noise_setting(n) if isinstance(n, str) else n for n in noise]
    check_methods(methods)
    check_noise(noise)
    if not (out / "results.csv").is_file():
        raise NoisysegError(f"{out / 'results.csv'}: not found; nothing to report")
    with _locked(out):
        rows = read_rows(out / "results.csv")
        curves = read_rows(out / "curves.csv")
        for row in rows:
            method, name, seed = cell_key(row)
            fresh = read_curve(run_dir_of(out, method, name, seed) / "metrics.jsonl", method, name, seed)
            if fresh:
                curves = [c for c in curves if cell_key(c) != (method, name, seed)] + fresh
        write_data(out, rows, curves)
        write_report(out, rows, curves, methods, [n.name for n in noise])
    return rows


def _base_config(config: Any, overrides: list[str] | None):
    from noisyseg.config import Config, config_from_dict, load_config

    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if isinstance(config, Config):
        return config_from_dict(config.model_dump(mode="json"), overrides=overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, source="bench config", overrides=overrides)
    raise NoisysegError(f"bench config: expected a YAML path, a Config or a config tree, got {type(config).__name__}")


def _check_cell_configs(base: dict, methods: list[str], seeds: list[int], train_json: Path) -> None:
    """Validate every cell's config, with ``train_json`` standing in for its (noisy) training file."""
    from noisyseg.config import config_from_dict

    for m in methods:
        plan = fix_plan(m)
        for s in seeds:
            if plan is None:
                config_from_dict(cell_config(base, m, train_json, s), source=f"bench[{m}, seed {s}]")
                continue
            first, retrain = fix_cell_configs(base, plan, train_json, train_json, s)
            config_from_dict(first, source=f"bench[{m}, seed {s}, first run]")
            config_from_dict(retrain, source=f"bench[{m}, seed {s}, retrain]")


def _train_files(clean_json: Path, noise: list[NoiseSetting], seeds: list[int], asym_preset: str, out: Path,
                 on_changed: str, tag: str) -> dict[tuple[str, int], tuple[Path, float, str]]:
    """(noise name, seed) -> (training file, realised noise rate, sha256 of the file).

    Noisy files are made in memory every call (noise injection is seeded) and written when missing; a
    file on disk that differs (the clean file or the preset changed) is refused or, with "retrain",
    replaced (the cells trained on it then no longer match their record and are trained again).
    """
    from noisyseg.noise import inject

    if not clean_json.is_file():
        raise NoisysegError(f"{clean_json}: training file (data.train_json) not found")
    clean_bytes = clean_json.read_bytes()
    clean = read_json(clean_json, "training file") if any(n.kind != "clean" for n in noise) else None
    files = {}
    for setting in noise:
        for seed in seeds:
            if setting.kind == "clean":
                files[(setting.name, seed)] = (clean_json, 0.0, _sha256(clean_bytes))
                continue
            kwargs = {"preset": asym_preset} if setting.kind == "asymmetric" else {}
            try:
                noisy, report = inject(clean, kind=setting.kind, rate=setting.rate, seed=seed, **kwargs)
            except NoisysegError as e:
                raise NoisysegError(f"{clean_json}: {setting.name}, seed {seed}: {e}") from None
            data = json.dumps(noisy).encode("utf-8")
            path = out / "noisy" / f"{setting.name}_seed{seed}.json"
            if not path.exists() or path.read_bytes() != data:
                if path.exists() and on_changed == "error":
                    raise NoisysegError(
                        f"{path}: differs from the {setting.name} noise that seed {seed} gives {clean_json} now "
                        f"(were the clean file or --asym-preset changed?); choose another -o")
                atomic_write_text(path, data.decode("utf-8"))
                print(f"[{tag}] {path}: {report['realised_rate']:.3f} of training labels changed", flush=True)
            files[(setting.name, seed)] = (path, float(report["realised_rate"]), _sha256(data))
    return files


def _differences(found: Any, expected: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two config trees differ."""
    if isinstance(found, dict) and isinstance(expected, dict):
        keys = sorted(set(found) | set(expected))
        return [d for k in keys for d in _differences(found.get(k), expected.get(k), f"{prefix}{k}.")]
    return [] if found == expected else [prefix.rstrip(".")]


def _recorded_identity(cell_file: Path, run_dir: Path, expected: dict) -> dict | None:
    """What the cell's existing run was trained from (None when nothing was trained there yet)."""
    if cell_file.is_file():
        return read_json(cell_file, "bench cell record")
    if (run_dir / "config.yaml").is_file():  # a run made before cell records existed: compare its config
        return {"config": yaml.safe_load((run_dir / "config.yaml").read_text()),
                "train_json_sha256": expected["train_json_sha256"]}
    return None


def _run_cell(out: Path, index: int, total: int, method: str, setting: NoiseSetting, seed: int, base: dict,
              train_file: tuple[Path, float, str], methods: list[str], noise: list[NoiseSetting], on_changed: str,
              write_tables: bool, progress: bool, tag: str, label: str | None = None) -> str:
    """Bring one cell to a results row; return what it took ("trained", "resumed", ...)."""
    from noisyseg.config import config_from_dict

    plan = fix_plan(method)
    label = label or f"[{tag}] cell {index}/{total}: {method} / {setting.name} / seed {seed}"
    if plan is not None:
        return _run_fix_cell(out, plan, setting, seed, base, train_file, methods, noise, on_changed, write_tables,
                             progress, tag, label)
    train_json, realised, sha = train_file
    cfg = config_from_dict(cell_config(base, method, train_json, seed), source=f"bench[{method}/{setting.name}]")
    run_dir = run_dir_of(out, method, setting.name, seed)
    cell_file = _cell_file(out, method, setting.name, seed)
    key = (method, setting.name, seed)
    identity = {"config": cfg.model_dump(mode="json"), "train_json_sha256": sha}

    if _check_recorded(run_dir, cell_file, identity, train_json, label, on_changed):
        _drop_row(out, key)
    elif any(cell_key(r) == key for r in read_rows(out / "results.csv")):
        return "already done"

    atomic_write_json(cell_file, identity, indent=1)
    metrics, train_seconds, what = _train_to_end(run_dir, cfg, label, progress)
    row = _result_row(method, setting, seed, metrics, train_seconds, realised)
    _record(out, row, _cell_curve(run_dir, row, cfg.train.epochs), methods, noise, write_tables)
    return what


def _check_recorded(run_dir: Path, cell_file: Path, identity: dict, train_json: Path, label: str,
                    on_changed: str) -> bool:
    """Compare what a cell's existing run was trained from with ``identity``; on a difference refuse
    (``on_changed="error"``) or delete the run and its record and return True (``"retrain"``)."""
    found = _recorded_identity(cell_file, run_dir, identity)
    if found is None or found == identity:
        return False
    differ = _differences(found.get("config"), identity["config"])
    if found.get("train_json_sha256") != identity["train_json_sha256"]:
        differ.append(f"the contents of {train_json}")
    if on_changed == "error":
        raise NoisysegError(f"{run_dir}: holds a run of another setup ({', '.join(differ)} differ); delete it "
                            f"or choose another -o")
    print(f"{label}: the run there was made with other settings ({', '.join(differ)}); training it again",
          flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    cell_file.unlink(missing_ok=True)
    return True


def _train_to_end(run_dir: Path, cfg, label: str, progress: bool) -> tuple[dict, float, str]:
    """(final metrics, train seconds, how) of the run in ``run_dir``: read when it finished, else trained
    or resumed from its ``last.pt``."""
    from noisyseg.engine.trainer import train

    metrics, train_seconds, what = _finished_metrics(run_dir, cfg, label, progress)
    if metrics is None:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        print(f"{label}{' (resuming)' if resume else ''}", flush=True)
        result = train(cfg, run_dir, resume=resume, progress=progress)
        metrics, train_seconds, what = result.metrics, result.train_seconds, "resumed" if resume else "trained"
        if "segm" not in metrics:  # the run had finished before (a resumed finished run evaluates nothing)
            metrics, train_seconds, _ = _finished_metrics(run_dir, cfg, label, progress)
    return metrics, train_seconds, what


def _result_row(method: str, setting: NoiseSetting, seed: int, metrics: dict, train_seconds: float,
                realised: float) -> dict:
    return {"method": method, "noise": setting.name, "noise_kind": setting.kind, "noise_rate": setting.rate,
            "seed": seed, "mask_AP": metrics["segm"]["AP"], "mask_AP50": metrics["segm"]["AP50"],
            "mask_AP75": metrics["segm"]["AP75"], "box_AP": metrics["bbox"]["AP"],
            "box_AP50": metrics["bbox"]["AP50"], "box_AP75": metrics["bbox"]["AP75"],
            "train_seconds": round(train_seconds, 1), "realised_noise_rate": round(realised, 4)}


def _cell_curve(run_dir: Path, row: dict, epochs: int) -> list[dict]:
    """The val-AP curve of a cell's run, ending at the row's final AP."""
    method, noise, seed = cell_key(row)
    curve = read_curve(run_dir / "metrics.jsonl", method, noise, seed)
    if not curve or curve[-1]["epoch"] != epochs:  # the final AP was scored outside the log
        curve.append({"method": method, "noise": noise, "seed": seed, "epoch": epochs,
                      "mask_AP": row["mask_AP"], "box_AP": row["box_AP"]})
    return curve


# ------------------------------------------------------------------------------------------ audit methods


def fixed_file_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The repaired training file an audit method's cell writes and retrains on."""
    return Path(out) / "fixed" / method_dir(method) / f"{noise}_seed{seed}.json"


def audit_dir_of(out: Path, method: str, noise: str, seed: int) -> Path:
    """The audit folder of an audit method's cell (label_issues, summary, review page, bench_audit.json)."""
    return Path(out) / "audits" / method_dir(method) / noise / f"seed{seed}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_fix_cell(out: Path, plan: FixPlan, setting: NoiseSetting, seed: int, base: dict,
                  train_file: tuple[Path, float, str], methods: list[str], noise: list[NoiseSetting],
                  on_changed: str, write_tables: bool, progress: bool, tag: str, label: str) -> str:
    """An audit method's cell: first run (shared with the base method's cell when it can be), audit,
    repaired file, retrain, results row with the total compute and the audit's figures."""
    from noisyseg.config import config_from_dict

    method = plan.spec
    train_json, realised, sha = train_file
    key = (method, setting.name, seed)
    fixed_json = fixed_file_of(out, method, setting.name, seed)
    first_tree, retrain_tree = fix_cell_configs(base, plan, train_json, fixed_json, seed)
    first_cfg = config_from_dict(first_tree, source=f"bench[{method}/{setting.name}, first run]")
    retrain_cfg = config_from_dict(retrain_tree, source=f"bench[{method}/{setting.name}, retrain]")
    first_dir = Path(out) / "runs" / plan.first_run_dir / setting.name / f"seed{seed}"
    first_identity = {"config": first_cfg.model_dump(mode="json"), "train_json_sha256": sha}
    run_dir, cell_file = run_dir_of(out, method, setting.name, seed), _cell_file(out, method, setting.name, seed)
    audit_dir = audit_dir_of(out, method, setting.name, seed)
    plan_identity = {"config": retrain_cfg.model_dump(mode="json"), "first_run": first_identity,
                     "fix": plan.options()}

    found = read_json(cell_file, "bench cell record") if cell_file.is_file() else None
    if found is not None and {k: found.get(k) for k in plan_identity} != plan_identity:
        differ = _fix_differences(found, plan_identity, train_json)
        if on_changed == "error":
            raise NoisysegError(f"{run_dir}: holds a run of another setup ({', '.join(differ)} differ); delete it "
                                f"or choose another -o")
        print(f"{label}: the cell was made with other settings ({', '.join(differ)}); running it again", flush=True)
        for folder in (run_dir, audit_dir):
            shutil.rmtree(folder, ignore_errors=True)
        fixed_json.unlink(missing_ok=True)
        cell_file.unlink(missing_ok=True)
        _drop_row(out, key)
        found = None
    elif any(cell_key(r) == key for r in read_rows(out / "results.csv")):
        return "already done"

    # 1. the first run
    first_label = f"{label}: first run ({plan.base})"
    if plan.shares_base_cell:
        _run_cell(out, 0, 0, plan.base, setting, seed, base, train_file, methods, noise, on_changed, write_tables,
                  progress, tag, label=first_label)
        base_row = next(r for r in read_rows(out / "results.csv") if cell_key(r) == (plan.base, setting.name, seed))
        first_seconds = _restore_base_run(first_dir, first_cfg, plan, base_row, first_label, progress)
        sources = [(first_dir, None)]
    elif plan.folds is None:
        first_cell = Path(out) / "cells" / plan.first_run_dir / setting.name / f"seed{seed}.json"
        _check_recorded(first_dir, first_cell, first_identity, train_json, first_label, on_changed)
        atomic_write_json(first_cell, first_identity, indent=1)
        _, first_seconds, _ = _train_to_end(first_dir, first_cfg, first_label, progress)
        sources = [(first_dir, None)]
    else:
        sources, first_seconds = _train_folds(out, plan, setting, seed, first_tree, train_json, first_dir,
                                              first_label, on_changed, progress)

    # 2. the audit and the repaired file
    audit_record = _audit_first_run(plan, sources, first_cfg, train_json, sha, audit_dir, fixed_json,
                                    f"{label}: audit", progress)

    # 3. the retrain on the repaired file
    if found is not None and found.get("train_json_sha256") not in (None, audit_record["fixed_sha256"]):
        print(f"{label}: the repaired file changed since the retrain started; training it again", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    atomic_write_json(cell_file, {**plan_identity, "train_json_sha256": audit_record["fixed_sha256"]}, indent=1)
    metrics, retrain_seconds, what = _train_to_end(run_dir, retrain_cfg, f"{label}: retrain ({plan.retrain})",
                                                   progress)
    total = first_seconds + audit_record["seconds"] + retrain_seconds
    row = _result_row(method, setting, seed, metrics, total, realised)
    truth = audit_record.get("truth") or {}
    row.update({"audit_seconds": round(audit_record["seconds"], 1), "retrain_seconds": round(retrain_seconds, 1),
                "audit_n_flagged": audit_record["n_flagged"],
                **{field: truth.get(name, "") for field, name in AUDIT_TRUTH_FIELDS.items()}})
    _record(out, row, _cell_curve(run_dir, row, retrain_cfg.train.epochs), methods, noise, write_tables)
    return what


def _restore_base_run(first_dir: Path, first_cfg, plan: FixPlan, base_row: dict, label: str,
                      progress: bool) -> float:
    """Train the base cell's run again when its results row is recorded but the run is not on disk (a
    bench folder kept, as we commit ours, with its figures and without ``runs/``): the audit needs the
    model, and the cell is seeded, so the run is made again as it was (resumed if a previous attempt was
    cut short). Its row stays as recorded; a reproduced AP that differs from it is said, not hidden.

    Returns the training seconds of the run the audit reads, from its ``metrics.json``: the base row's time,
    or that of the run made again (on today's machine, like the audit and the retrain)."""
    needed = [first_dir / "checkpoints" / f"{name}.pt" for name in plan.checkpoint_names(first_cfg.train.epochs)]
    if all(path.is_file() for path in needed) and (first_dir / "metrics.json").is_file():
        return float(read_json(first_dir / "metrics.json", "run metrics").get("train_seconds",
                                                                             base_row["train_seconds"]))
    print(f"{label}: recorded in results.csv, but {first_dir} does not hold the finished run; training it again "
          f"to audit it", flush=True)
    metrics, seconds, _ = _train_to_end(first_dir, first_cfg, label, progress)
    recorded, again = float(base_row["mask_AP"]), float(metrics["segm"]["AP"])
    if round(again, 4) != round(recorded, 4):
        print(f"{label}: trained again it reaches mask AP {again:.2f}, recorded {recorded:.2f}; the audit uses the "
              f"new run, the results row stays", flush=True)
    return seconds


def _fix_differences(found: dict, expected: dict, train_json: Path) -> list[str]:
    """What differs between an audit cell's record and its plan, for a one-line message: config keys of
    either run (once), the first run's training file, the fix options."""
    differ = _differences(found.get("config"), expected["config"])
    first_found, first = found.get("first_run") or {}, expected["first_run"]
    differ += [k for k in _differences(first_found.get("config"), first["config"]) if k not in differ]
    if first_found.get("train_json_sha256") != first["train_json_sha256"]:
        differ.append(f"the contents of {train_json}")
    differ += [f"fix {k}" for k in _differences(found.get("fix"), expected["fix"])]
    return differ


def _train_folds(out: Path, plan: FixPlan, setting: NoiseSetting, seed: int, first_tree: dict, train_json: Path,
                 first_dir: Path, label: str, on_changed: str, progress: bool) -> tuple[list[tuple[Path, list]], float]:
    """The K first runs of out-of-sample scoring, each on the training file without one fold's images
    (``folds/<first run>/<noise>_seed<S>_fold<k>.json``, run ``<first run dir>/fold<k>``); returns the
    (run folder, held-out image ids) of each fold and their summed training seconds."""
    from noisyseg.bench.grid import fold_image_ids, without_images
    from noisyseg.config import config_from_dict

    coco = read_json(train_json, "training file")
    folds = fold_image_ids(coco, plan.folds, seed)
    sources, seconds = [], 0.0
    for k, held_out in enumerate(folds):
        data = json.dumps(without_images(coco, held_out)).encode("utf-8")
        fold_json = Path(out) / "folds" / plan.first_run_dir / f"{setting.name}_seed{seed}_fold{k}.json"
        if not fold_json.is_file() or fold_json.read_bytes() != data:
            atomic_write_text(fold_json, data.decode("utf-8"))
        tree = json.loads(json.dumps(first_tree))
        tree["data"]["train_json"] = str(fold_json)
        cfg = config_from_dict(tree, source=f"bench[{plan.spec}/{setting.name}, fold {k}]")
        run_dir = first_dir / f"fold{k}"
        cell_file = Path(out) / "cells" / plan.first_run_dir / setting.name / f"seed{seed}" / f"fold{k}.json"
        identity = {"config": cfg.model_dump(mode="json"), "train_json_sha256": _sha256(data)}
        fold_label = f"{label}, fold {k + 1}/{plan.folds}"
        _check_recorded(run_dir, cell_file, identity, fold_json, fold_label, on_changed)
        atomic_write_json(cell_file, identity, indent=1)
        _, fold_seconds, _ = _train_to_end(run_dir, cfg, fold_label, progress)
        sources.append((run_dir, held_out))
        seconds += fold_seconds
    return sources, seconds


def _audit_first_run(plan: FixPlan, sources: list[tuple[Path, list | None]], first_cfg, train_json: Path,
                     train_sha: str, audit_dir: Path, fixed_json: Path, label: str, progress: bool) -> dict:
    """Audit the first run(s) on the training file into ``audit_dir`` and write the repaired ``fixed_json``,
    unless ``bench_audit.json`` there shows that this was done from the same checkpoints, file and options
    and the repaired file is intact. ``sources``: one (run folder, None), or per fold (run folder, its
    held-out image ids). Returns the record: seconds (the whole audit's wall time), n_flagged, truth (the
    audit against clean_category_id, or None), fixed_sha256."""
    from noisyseg.audit import audit
    from noisyseg.engine.distributed import torch_threads

    names = plan.checkpoint_names(first_cfg.train.epochs)
    checkpoints = {str(run / "checkpoints" / f"{n}.pt"): run / "checkpoints" / f"{n}.pt"
                   for run, _ in sources for n in names}
    inputs = {"checkpoints": {key: _file_sha256(path) for key, path in checkpoints.items()},
              "train_json": str(train_json), "train_json_sha256": train_sha, "action": plan.action,
              "filter_by": plan.filter_by}
    record_path = audit_dir / "bench_audit.json"
    if record_path.is_file() and fixed_json.is_file():
        record = read_json(record_path, "bench audit record")
        if record.get("inputs") == inputs and record.get("fixed_sha256") == _file_sha256(fixed_json):
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
                       progress=progress)
    seconds = time.perf_counter() - t0
    record = {"inputs": inputs, "seconds": seconds, "n_flagged": result.summary["n_flagged"],
              "n_annotations": result.summary["n_annotations"], "truth": result.summary.get("truth"),
              "fix": result.fix_report and {k: v for k, v in result.fix_report.items() if k != "annotation_ids"},
              "fixed_sha256": _file_sha256(fixed_json)}
    atomic_write_json(record_path, record, indent=1)
    return record


def _finished_metrics(run_dir: Path, cfg, label: str, progress: bool) -> tuple[dict | None, float, str]:
    """(final metrics, train seconds, how) of a run that finished training; (None, nan, "") otherwise.

    The metrics come from ``metrics.json``, or, when it lacks the final AP (or was never written because
    the run stopped between its last checkpoint and the final evaluation), from evaluating the last
    checkpoint; they are then written back to ``metrics.json``.
    """
    from noisyseg.engine.checkpoint import load_checkpoint

    metrics_path, ckpt = run_dir / "metrics.json", run_dir / "checkpoints" / "last.pt"
    saved = read_json(metrics_path, "run metrics") if metrics_path.is_file() else {}
    seconds = float(saved.get("train_seconds", math.nan))
    if "segm" in saved and "bbox" in saved and saved.get("epoch") == cfg.train.epochs:
        print(f"{label}: trained before; its results come from {metrics_path}", flush=True)
        return saved, seconds, "already done"
    last = load_checkpoint(ckpt) if ckpt.is_file() else None
    if last is None or last["epoch"] < cfg.train.epochs:
        return None, math.nan, ""
    if math.isnan(seconds):  # metrics.json lost: the last checkpoint also records the training time
        seconds = float(last.get("train_seconds", math.nan))
    print(f"{label}: trained, but {metrics_path} has no final AP: evaluating {ckpt}", flush=True)
    metrics = evaluate_checkpoint(ckpt, cfg, progress)
    atomic_write_json(metrics_path, {**saved, "epoch": cfg.train.epochs, "train_seconds": seconds, **metrics},
                      indent=2)
    return metrics, seconds, "re-evaluated"


def evaluate_checkpoint(checkpoint: Path, cfg, progress: bool = True) -> dict:
    """Box and mask COCO AP of a trained checkpoint on ``cfg``'s val split, on ``cfg.train.device``, in
    batches of ``train.batch_size`` images as the trainer's own evaluation (so the same AP comes back), with
    ``train.threads`` CPU threads (the caller's count restored after)."""
    from noisyseg.engine.distributed import select_device, torch_threads
    from noisyseg.engine.evaluate import evaluate_checkpoint as score

    with torch_threads(cfg.train.threads):
        metrics, _ = score(checkpoint, cfg.data, select_device(cfg.train.device, "train.device"),
                           batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers, progress=progress)
    return metrics


@contextlib.contextmanager
def _locked(out: Path):
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(out: Path, row: dict | None, curve: list[dict], methods: list[str], noise: list[NoiseSetting],
            write_tables: bool) -> list[dict]:
    """Put ``row`` and its ``curve`` into the csv files (replacing the cell's old ones) and, with
    ``write_tables``, rewrite the table and plot; all under the folder's lock, after re-reading the files,
    so bench processes sharing the folder add to each other's results."""
    with _locked(out):
        rows = read_rows(out / "results.csv")
        curves = read_rows(out / "curves.csv")
        if row is not None:
            key = cell_key(row)
            rows = [r for r in rows if cell_key(r) != key] + [row]
            curves = [c for c in curves if cell_key(c) != key] + curve
        write_data(out, rows, curves)
        if write_tables:
            write_report(out, rows, curves, methods, [n.name for n in noise])
    return rows


def _drop_row(out: Path, key: tuple[str, str, int]) -> None:
    with _locked(out):
        rows = [r for r in read_rows(out / "results.csv") if cell_key(r) != key]
        curves = [c for c in read_rows(out / "curves.csv") if cell_key(c) != key]
        write_data(out, rows, curves)


def record_command(out: Path, line: str) -> None:
    """Add a bench command to ``command.txt`` unless it is there already.

    A folder is often filled by several calls (one per seed or GPU, or a resumed bench), so the file keeps
    every distinct command that trained in it, in order.
    """
    with _locked(out):
        path = out / "command.txt"
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        if line not in lines:
            atomic_write_text(path, "".join(lines) + line)


def _command_text(config, methods, noise, seeds, asym_preset, overrides, out) -> str:
    parts = ["noisyseg bench", str(config), "--methods", ",".join(methods), "--noise", ",".join(n.name for n in noise),
             "--seeds", ",".join(map(str, seeds)), "--asym-preset", asym_preset]
    for o in overrides or []:
        parts += ["--set", o]
    return " ".join(parts + ["-o", str(out)]) + "\n"
