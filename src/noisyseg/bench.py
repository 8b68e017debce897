"""``noisyseg bench``: the paper's table — methods x noise settings x seeds, trained and scored on clean val.

Each cell is one training run in ``OUT/runs/<method>/<noise>/seed<S>``; a cell with a ``metrics.json``
is done and skipped, a cell with only a checkpoint is resumed, so an interrupted bench continues where it
stopped. After every cell ``results.csv``, ``table.md`` and ``ap_vs_noise.png`` are rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes, atomic_write_text

# method -> (loss name, loss params, use the config's CE warm-up?, model overrides)
METHODS: dict[str, tuple[str, dict[str, Any], bool, dict[str, Any]]] = {
    "ce": ("ce", {}, False, {}),
    "sce": ("sce", {}, False, {}),
    "gce": ("gce", {}, False, {}),
    "apl": ("apl", {}, False, {}),
    "lncis": ("lncis", {}, True, {}),
    "lncis-nowarmup": ("lncis", {}, False, {}),
    "lncis-pon": ("lncis", {"pon_threshold": 6.0}, True, {}),
    "lncis-sce": ("lncis", {"robust": "sce"}, True, {}),
    "lncis-gce": ("lncis", {"robust": "gce"}, True, {}),
    # beyond the paper: one mask/box channel for all classes, so a wrong label cannot pick the wrong one
    "ce-agnostic": ("ce", {}, False, {"class_agnostic": True}),
    "lncis-agnostic": ("lncis", {}, True, {"class_agnostic": True}),
}
DEFAULT_NOISE = "clean,sym0.2,sym0.4,sym0.6,sym0.8,asym0.2,asym0.4"
CSV_FIELDS = ["method", "noise", "noise_kind", "noise_rate", "seed", "mask_AP", "mask_AP50", "mask_AP75",
              "box_AP", "box_AP50", "box_AP75", "train_seconds", "realised_noise_rate"]


@dataclass(frozen=True)
class NoiseSetting:
    name: str
    kind: str  # "clean" | "symmetric" | "asymmetric"
    rate: float


def parse_noise(spec: str) -> list[NoiseSetting]:
    """``clean,sym0.4,asym0.2`` -> settings (rates in [0, 1])."""
    out = []
    for token in [t.strip() for t in spec.split(",") if t.strip()]:
        if token == "clean":
            out.append(NoiseSetting("clean", "clean", 0.0))
            continue
        m = re.fullmatch(r"(sym|asym)(\d*\.?\d+)", token)
        if not m:
            raise NoisysegError(f"--noise: cannot read {token!r}; expected clean, symR or asymR (e.g. sym0.4)")
        rate = float(m.group(2))
        if not 0.0 <= rate <= 1.0:
            raise NoisysegError(f"--noise: rate in {token!r} must be in [0, 1]")
        out.append(NoiseSetting(token, "symmetric" if m.group(1) == "sym" else "asymmetric", rate))
    if not out:
        raise NoisysegError("--noise: no setting given")
    return out


def split_method(method: str) -> tuple[str, dict[str, Any]]:
    """``lncis:log_zero=-4:robust=sce`` -> ("lncis", {"log_zero": -4, "robust": "sce"}).

    Parameters after the name are loss parameters added to the method's own (values read as YAML), so one
    bench can compare settings of a loss, e.g. its ``log_zero`` constant.
    """
    name, *pairs = method.split(":")
    if name not in METHODS:
        raise NoisysegError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS)}")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NoisysegError(f"--methods: cannot read {pair!r} in {method!r}; expected METHOD:KEY=VALUE")
        params[key.strip()] = yaml.safe_load(value)
    return name, params


def parse_methods(spec: str) -> list[str]:
    """Comma-separated methods, each a name from METHODS with optional ``:KEY=VALUE`` loss parameters."""
    from noisyseg.losses import build_loss

    methods = [m.strip() for m in spec.split(",") if m.strip()]
    for m in methods:
        name, extra = split_method(m)
        if extra:
            loss, params, _, _ = METHODS[name]
            try:
                build_loss(loss, **{**params, **extra})
            except NoisysegError as e:
                raise NoisysegError(f"--methods: {m!r}: {e}") from None
    if not methods:
        raise NoisysegError("--methods: no method given")
    return methods


def method_dir(method: str) -> str:
    """A folder name for a method spec (``lncis:log_zero=-4`` -> ``lncis_log_zero=-4``)."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", method)


def parse_seeds(spec: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise NoisysegError(f"--seeds: expected comma-separated integers, got {spec!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="methods x noise settings x seeds: results.csv, table.md, ap_vs_noise.png",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="base YAML config (its train set is the clean one that noise is added to)")
    p.add_argument("--methods", default="ce,sce,gce,lncis", help=f"comma-separated, from: {', '.join(METHODS)}; "
                   "loss parameters may follow a name, e.g. lncis:log_zero=-4")
    p.add_argument("--noise", default=DEFAULT_NOISE, help=f"comma-separated settings (default {DEFAULT_NOISE})")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--asym-preset", default="supercategory",
                   help="asymmetric noise preset: supercategory | cityscapes | voc (default supercategory)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config value (repeatable)")
    p.add_argument("-o", "--out", type=Path, required=True, help="bench folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite table.md and ap_vs_noise.png from results.csv")
    p.set_defaults(func=_run_cli)


def _run_cli(a) -> int:
    methods, noise = parse_methods(a.methods), parse_noise(a.noise)
    if a.report_only:
        if not (a.out / "results.csv").exists():
            raise NoisysegError(f"{a.out / 'results.csv'}: not found; nothing to report")
        rows = record_row(a.out, None, methods, noise)
        print((a.out / "table.md").read_text())
        print(f"{len(rows)} runs in {a.out / 'results.csv'}")
        return 0
    run_bench(Path(a.config), parse_methods(a.methods), parse_noise(a.noise), parse_seeds(a.seeds), a.out,
              a.asym_preset, a.overrides, progress=not a.no_progress)
    return 0


def _noisy_train_json(clean_json: Path, setting: NoiseSetting, seed: int, asym_preset: str, out: Path) -> tuple[Path, float]:
    if setting.kind == "clean":
        return clean_json, 0.0
    from noisyseg.noise import inject
    from noisyseg.utils.io import read_json

    path = out / "noisy" / f"{setting.name}_seed{seed}.json"
    if path.exists():
        return path, float(read_json(path)["info"]["noise"]["realised_rate"])
    kwargs = {"preset": asym_preset} if setting.kind == "asymmetric" else {}
    noisy, report = inject(read_json(clean_json), kind=setting.kind, rate=setting.rate, seed=seed, **kwargs)
    atomic_write_text(path, json.dumps(noisy))
    return path, float(report["realised_rate"])


def cell_config(base: dict, method: str, train_json: Path, seed: int) -> dict:
    """The base config tree with this cell's loss, seed and noisy train file."""
    tree = json.loads(json.dumps(base))
    name, extra = split_method(method)
    loss, params, warm, model = METHODS[name]
    params = {**params, **extra}
    tree["seed"] = seed
    tree.setdefault("model", {}).update(model)
    tree["data"]["train_json"] = str(train_json)
    tree.setdefault("loss", {})
    warmup = tree["loss"].get("warmup_epochs", 0) if warm else 0
    tree["loss"] = {"name": loss, "params": params, "warmup_epochs": warmup}
    tree.pop("out_dir", None)
    return tree


def run_bench(config: Path, methods: list[str], noise: list[NoiseSetting], seeds: list[int], out: Path,
              asym_preset: str = "supercategory", overrides: list[str] | None = None, progress: bool = True) -> list[dict]:
    from noisyseg.config import config_from_dict, load_config
    from noisyseg.engine.trainer import train

    base_cfg = load_config(config, overrides)  # validates the base once
    base = base_cfg.model_dump(mode="json")
    clean_json = Path(base_cfg.data.train_json)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(m, n, s) for n in noise for m in methods for s in seeds]
    record_command(out, _command_text(config, methods, noise, seeds, asym_preset, overrides, out))
    rows: list[dict] = _read_rows(out / "results.csv")
    done = {(r["method"], r["noise"], int(r["seed"])) for r in rows}
    t0 = time.time()
    for i, (method, setting, seed) in enumerate(cells, 1):
        if (method, setting.name, seed) in done:
            continue
        train_json, realised = _noisy_train_json(clean_json, setting, seed, asym_preset, out)
        run_dir = out / "runs" / method_dir(method) / setting.name / f"seed{seed}"
        cfg = config_from_dict(cell_config(base, method, train_json, seed), source=f"bench[{method}/{setting.name}]")
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        print(f"[bench] cell {i}/{len(cells)}: {method} / {setting.name} / seed {seed}"
              f"{' (resuming)' if resume else ''}", flush=True)
        result = train(cfg, run_dir, resume=resume, progress=progress)
        m = result.metrics
        row = {"method": method, "noise": setting.name, "noise_kind": setting.kind, "noise_rate": setting.rate,
                     "seed": seed, "mask_AP": m["segm"]["AP"], "mask_AP50": m["segm"]["AP50"],
                     "mask_AP75": m["segm"]["AP75"], "box_AP": m["bbox"]["AP"], "box_AP50": m["bbox"]["AP50"],
                     "box_AP75": m["bbox"]["AP75"], "train_seconds": round(result.train_seconds, 1),
                     "realised_noise_rate": round(realised, 4)}
        rows = record_row(out, row, methods, noise)
    rows = record_row(out, None, methods, noise)
    print(f"[bench] {len(cells)} cells done in {out} ({time.time() - t0:.0f} s this call)")
    print((out / "table.md").read_text())
    return rows


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


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@contextlib.contextmanager
def _locked(out: Path):
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_row(out: Path, row: dict | None, methods: list[str], noise: list[NoiseSetting]) -> list[dict]:
    """Add ``row`` to ``results.csv`` and rewrite the table and plot, under a file lock.

    The csv is re-read first, so several bench processes (other seeds, other GPUs) can share one folder.
    """
    with _locked(out):
        rows = _read_rows(out / "results.csv")
        if row is not None:
            key = (row["method"], row["noise"], str(row["seed"]))
            rows = [r for r in rows if (r["method"], r["noise"], str(r["seed"])) != key] + [row]
        write_outputs(out, rows, methods, noise)
    return rows


def write_outputs(out: Path, rows: list[dict], methods: list[str], noise: list[NoiseSetting]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in CSV_FIELDS})
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "table.md", format_table(rows, methods, [n.name for n in noise]))
    if rows:
        plot_ap_vs_noise(rows, methods, out / "ap_vs_noise.png")


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def format_table(rows: list[dict], methods: list[str], noise_names: list[str], metric: str = "mask_AP") -> str:
    """Methods x noise settings, ``mean ± std`` over seeds (n seeds noted), best mean per column in bold."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["noise"]), []).append(float(r[metric]))
    best = {}
    for n in noise_names:
        means = [_stats(cells[(m, n)])[0] for m in methods if (m, n) in cells]
        best[n] = max(means) if means else None
    lines = [f"{metric.replace('_', ' ')} on clean val, mean ± std over seeds", "",
             "| method | " + " | ".join(noise_names) + " |", "|---|" + "---|" * len(noise_names)]
    for m in methods:
        row = []
        for n in noise_names:
            if (m, n) not in cells:
                row.append("–")
                continue
            mean, std = _stats(cells[(m, n)])
            text = f"{mean:.1f} ± {std:.1f}" if len(cells[(m, n)]) > 1 else f"{mean:.1f}"
            row.append(f"**{text}**" if best[n] is not None and abs(mean - best[n]) < 1e-9 else text)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    counts = sorted({len(v) for v in cells.values()})
    lines += ["", f"seeds per cell: {', '.join(map(str, counts)) if counts else 'none yet'}"]
    return "\n".join(lines) + "\n"


def plot_ap_vs_noise(rows: list[dict], methods: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110, sharey=True)
    for ax, kind, title in [(axes[0], "symmetric", "symmetric noise"), (axes[1], "asymmetric", "asymmetric noise")]:
        for m in methods:
            pts: dict[float, list[float]] = {}
            for r in rows:
                if r["method"] == m and r["noise_kind"] in ("clean", kind):
                    pts.setdefault(float(r["noise_rate"]), []).append(float(r["mask_AP"]))
            if not pts:
                continue
            xs = sorted(pts)
            stats = [_stats(pts[x]) for x in xs]
            ax.errorbar([x * 100 for x in xs], [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                        capsize=3, label=m)
        ax.set_title(title)
        ax.set_xlabel("noise rate (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mask AP on clean val")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
