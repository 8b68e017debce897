"""Running a bench: the grid loop. Every cell (method x noise setting x seed) is brought to its results row
by :mod:`noisyseg.bench.cells` (trained once, resumed, or re-scored), and its row written by
:mod:`noisyseg.bench.records` (which also describes the folder's layout).

A cell with a results row is done. Several bench processes may share a folder (other seeds, other GPUs):
the csv files are re-read and rewritten under a file lock, and a cell another process is training right
now is left to it (this call goes on with the other cells and says which it left).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from noisyseg.bench.cells import TrainFile, run_cell
from noisyseg.bench.grid import (
    FIX_DEFAULTS,
    NoiseSetting,
    cell_config,
    check_methods,
    check_noise,
    check_seeds,
    fix_cell_configs,
    fix_plan,
    parse_noise_setting,
)
from noisyseg.bench.records import BenchFolder, command_text, locked, record_command, run_dir_of  # noqa: F401
from noisyseg.bench.report import cell_key, read_curve, read_rows, write_data, write_report
from noisyseg.engine.run_folder import RunFolder, RunFolderLocked
from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_text, ensure_output_dir, read_json

#: What to do with a cell whose folder holds a run of another setup: "error" refuses with one line (the
#: bench), "retrain" deletes that run and trains again (the demo).
ON_CHANGED = ("error", "retrain")


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
    _check_known_matrix_rules(methods, noise)
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
        record_command(out, command_text(config, methods, noise, seeds, asym_preset, overrides, out))
    if not clean_json.is_file():
        raise NoisysegError(f"{clean_json}: training file (data.train_json) not found")
    clean_bytes = clean_json.read_bytes()
    clean = read_json(clean_json, "training file")  # read once: the class counts and every noisy file come from it
    bench = BenchFolder(out, tuple(methods), tuple(noise), on_changed, write_tables, progress, tag,
                        _class_counts(clean))
    train_files = _train_files(clean_json, clean_bytes, clean, noise, seeds, asym_preset, bench)

    cells = [(m, n, s) for n in noise for m in methods for s in seeds]
    counts = {"trained": 0, "resumed": 0, "re-evaluated": 0, "already done": 0, "left to another process": 0}
    t0 = time.time()
    for i, (method, setting, seed) in enumerate(cells, 1):
        label = f"[{tag}] cell {i}/{len(cells)}: {method} / {setting.name} / seed {seed}"
        try:
            what = run_cell(bench, method, setting, seed, base, train_files[(setting.name, seed)], label)
        except RunFolderLocked as e:
            print(f"{label}: left to the process training it ({e}); going on with the other cells", flush=True)
            what = "left to another process"
        counts[what] += 1
    rows = bench.record(None)
    done = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    print(f"[{tag}] {len(cells)} cells in {out}: {done} ({time.time() - t0:.0f} s this call)", flush=True)
    if write_tables:
        print((out / "table.md").read_text(), flush=True)
    return rows


def report_bench(out_dir: str | Path, methods: Sequence[str], noise: Sequence[NoiseSetting | str]) -> list[dict]:
    """Train nothing: rewrite ``curves.csv`` (from the runs still in the folder that end at their row's
    AP), ``table.md`` and ``ap_vs_noise.png`` from ``results.csv``; return its rows."""
    out = Path(out_dir)
    methods = list(methods)
    noise = [parse_noise_setting(n) if isinstance(n, str) else n for n in noise]
    check_methods(methods)
    check_noise(noise)
    if not (out / "results.csv").is_file():
        raise NoisysegError(f"{out / 'results.csv'}: not found; nothing to report")
    with locked(out):
        rows = read_rows(out / "results.csv", check=True)
        curves = read_rows(out / "curves.csv", check=True)
        classes = read_rows(out / "per_class.csv", check=True)
        for row in rows:
            method, name, seed = cell_key(row)
            fresh = read_curve(RunFolder(run_dir_of(out, method, name, seed)).log_records(), method, name, seed)
            # Only the run the row records: a fix cell's base run trained again (on another machine, to
            # another AP; its row stays as recorded) or a run cut short keeps the curve that was recorded.
            if fresh and math.isclose(float(fresh[-1]["mask_AP"]), float(row["mask_AP"]), rel_tol=1e-9):
                curves = [c for c in curves if cell_key(c) != (method, name, seed)] + fresh
        write_data(out, rows, curves, classes)
        write_report(out, rows, curves, methods, [n.name for n in noise], classes)
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


def _check_known_matrix_rules(methods: Sequence[str], noise: Sequence[NoiseSetting]) -> None:
    """Refuse an audit method whose noise matrix rule would read the clean file's own matrix: the clean file
    records no noise, that matrix is the identity, the rule flags nothing and the cell would train CE again."""
    from noisyseg.audit import NOISE_MATRIX_FILTERS

    if not any(setting.kind == "clean" for setting in noise):
        return
    for method in methods:
        plan = fix_plan(method)
        known = plan is not None and plan.transition == FIX_DEFAULTS["transition"]
        if known and plan.filter_by in NOISE_MATRIX_FILTERS:
            raise NoisysegError(f"--methods {method!r} at --noise clean: the clean file records no noise, so its own "
                                f"matrix (transition=data) is the identity and {plan.filter_by} flags nothing; add "
                                ":transition=estimate or :transition=uniform (estimates from the audit's own scores, "
                                "as for real noise) or leave clean out")


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


def _train_files(clean_json: Path, clean_bytes: bytes, clean: dict, noise: list[NoiseSetting], seeds: list[int],
                 asym_preset: str, bench: BenchFolder) -> dict[tuple[str, int], TrainFile]:
    """(noise name, seed) -> the cell's :class:`~noisyseg.bench.cells.TrainFile`; ``clean_bytes`` and ``clean``
    are the clean training file's bytes and its parsed tree.

    Noisy files are made in memory every call (noise injection is seeded) and written when missing; a
    file on disk that differs (the clean file or the preset changed) is refused or, with "retrain",
    replaced (the cells trained on it then no longer match their record and are trained again).
    """
    from noisyseg.noise import inject

    files = {}
    for setting in noise:
        for seed in seeds:
            if setting.kind == "clean":
                files[(setting.name, seed)] = TrainFile(clean_json, 0.0, _sha256(clean_bytes))
                continue
            kwargs = {"preset": asym_preset} if setting.kind == "asymmetric" else {}
            try:
                noisy, report = inject(clean, kind=setting.kind, rate=setting.rate, seed=seed, **kwargs)
            except NoisysegError as e:
                raise NoisysegError(f"{clean_json}: {setting.name}, seed {seed}: {e}") from None
            data = json.dumps(noisy).encode("utf-8")
            path = bench.noisy_file(setting.name, seed)
            if not path.exists() or path.read_bytes() != data:
                if path.exists() and bench.on_changed == "error":
                    raise NoisysegError(
                        f"{path}: differs from the {setting.name} noise that seed {seed} gives {clean_json} now "
                        f"(were the clean file or --asym-preset changed?); choose another -o")
                atomic_write_text(path, data.decode("utf-8"))
                print(f"[{bench.tag}] {path}: {report['realised_rate']:.3f} of training labels changed", flush=True)
            files[(setting.name, seed)] = TrainFile(path, float(report["realised_rate"]), _sha256(data))
    return files


def _class_counts(coco: dict) -> tuple[tuple[str, int], ...]:
    """(class name, non-crowd annotations) of the clean training file ``coco`` (the tables order classes by
    these counts)."""
    counts: dict = {}
    for a in coco.get("annotations", []):
        if not a.get("iscrowd"):
            counts[a.get("category_id")] = counts.get(a.get("category_id"), 0) + 1
    cats = [c for c in coco.get("categories", []) if isinstance(c, dict)]
    return tuple((str(c.get("name", c.get("id"))), counts.get(c.get("id"), 0))
                 for c in sorted(cats, key=lambda c: str(c.get("id"))))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
