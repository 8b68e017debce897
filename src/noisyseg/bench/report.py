"""The bench's report: ``results.csv`` (one row per cell), ``curves.csv`` (val AP per evaluated epoch),
``per_class.csv`` (mask and box AP of each class per cell, with the class's count in the clean training
file), ``table.md`` and ``ap_vs_noise.png``.

Rows are dicts with the :data:`CSV_FIELDS` keys (values as read from the csv: strings, or numbers for rows
just measured); rows of audit methods (``lncis+fix:...``) also have the :data:`AUDIT_FIELDS` keys, which
``results.csv`` gets as extra columns once such a row exists (empty for the other methods). Curve rows
have the :data:`CURVE_FIELDS` keys.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes, atomic_write_text

CSV_FIELDS = ["method", "noise", "noise_kind", "noise_rate", "seed", "mask_AP", "mask_AP50", "mask_AP75",
              "box_AP", "box_AP50", "box_AP75", "train_seconds", "realised_noise_rate"]
#: Audit methods' columns: ``train_seconds`` is their total (first run + audit + retrain); these give the
#: audit's own wall time, the retrain's training time, the flagged count and (when the training file has
#: ``clean_category_id``) the audit against the truth (:func:`noisyseg.audit.truth_metrics`).
AUDIT_TRUTH_FIELDS = {"audit_auroc": "auroc", "audit_ap": "average_precision",
                      "audit_flagged_precision": "flagged_precision", "audit_flagged_recall": "flagged_recall",
                      "audit_precision_at_recall_0.8": "precision_at_recall_0.8"}
AUDIT_FIELDS = ["audit_seconds", "retrain_seconds", "audit_n_flagged", *AUDIT_TRUTH_FIELDS]
CURVE_FIELDS = ["method", "noise", "seed", "epoch", "mask_AP", "box_AP"]
PER_CLASS_FIELDS = ["method", "noise", "seed", "class", "train_count", "mask_AP", "box_AP"]
#: the columns that must read as numbers (empty allowed where marked False) when a csv is checked
_NUMBER_FIELDS = {"seed": True, "noise_rate": True, "mask_AP": True, "box_AP": True, "epoch": True,
                  "mask_AP50": True, "mask_AP75": True, "box_AP50": True, "box_AP75": True, "train_seconds": True,
                  "realised_noise_rate": True, "train_count": False,
                  **{f: False for f in ("audit_seconds", "retrain_seconds", "audit_n_flagged", *AUDIT_TRUTH_FIELDS)}}
BASELINE = "ce"


def cell_key(row: dict) -> tuple[str, str, int]:
    """(method, noise, seed) of a results or curve row."""
    return row["method"], row["noise"], int(row["seed"])


def read_rows(path: Path, check: bool = False) -> list[dict]:
    """The rows of a csv written by this module ([] when the file does not exist).

    With ``check`` (a folder handed to ``--report-only``, perhaps edited by hand), every row must have the
    cell key and its number columns must read as numbers: otherwise one :class:`NoisysegError` line names
    the file, the row (1 = the first after the header), the column and the value.
    """
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise NoisysegError(f"{path}: not a csv file this bench wrote ({e})") from None
    if check:
        for i, row in enumerate(rows, 1):
            for field in ("method", "noise", "seed"):
                if not row.get(field):
                    raise NoisysegError(f"{path}: row {i}: column {field!r} is missing or empty")
            for field, required in _NUMBER_FIELDS.items():
                value = row.get(field)
                if value is None or (value == "" and (not required or "class" in row)):
                    continue  # per-class rows leave AP empty for a class without val objects
                try:
                    number = float(value)
                    if field == "seed" and number != int(number):
                        raise ValueError
                except (TypeError, ValueError):
                    shown = value if len(value) <= 40 else value[:40] + "..."
                    raise NoisysegError(f"{path}: row {i}: column {field!r}: expected a number, got {shown!r}") from None
    return rows


def csv_text(rows: Iterable[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in fields})
    return buf.getvalue()


def has_audit(row: dict) -> bool:
    """Whether a results row is an audit method's (it has the audit's columns filled)."""
    return row.get("audit_seconds") not in (None, "")


def result_fields(rows: list[dict]) -> list[str]:
    """The columns of ``results.csv``: :data:`CSV_FIELDS`, and :data:`AUDIT_FIELDS` when a row has them."""
    return CSV_FIELDS + AUDIT_FIELDS if any(has_audit(r) for r in rows) else CSV_FIELDS


def read_curve(log_records: list[dict], method: str, noise: str, seed: int) -> list[dict]:
    """Curve rows of one run from the ``{"event": "eval", "epoch": N, "segm_AP": .., "bbox_AP": ..}`` records
    of its training log (:meth:`noisyseg.engine.run_folder.RunFolder.log_records`), by epoch; when an epoch
    was logged twice (a resumed run) the last record wins.
    """
    by_epoch: dict[int, dict] = {}
    for record in log_records:
        if isinstance(record, dict) and record.get("event") == "eval" and "segm_AP" in record:
            epoch = int(record["epoch"])
            by_epoch[epoch] = {"method": method, "noise": noise, "seed": seed, "epoch": epoch,
                               "mask_AP": record["segm_AP"], "box_AP": record.get("bbox_AP", math.nan)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_data(out: Path, rows: list[dict], curves: list[dict], per_class: list[dict]) -> None:
    """Rewrite ``results.csv``, ``curves.csv`` and (when there are per-class rows) ``per_class.csv``."""
    atomic_write_text(out / "results.csv", csv_text(rows, result_fields(rows)))
    atomic_write_text(out / "curves.csv", csv_text(curves, CURVE_FIELDS))
    if per_class or (out / "per_class.csv").exists():
        atomic_write_text(out / "per_class.csv", csv_text(per_class, PER_CLASS_FIELDS))


def write_report(out: Path, rows: list[dict], curves: list[dict], methods: list[str], noise_names: list[str],
                 per_class: list[dict] = ()) -> None:
    """Rewrite ``table.md`` and ``ap_vs_noise.png``."""
    atomic_write_text(out / "table.md", format_report(rows, curves, methods, noise_names, list(per_class)))
    if rows:
        plot_ap_vs_noise(rows, methods, out / "ap_vs_noise.png")


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _by_cell(rows: list[dict], metric: str) -> dict[tuple[str, str], dict[int, float]]:
    """(method, noise) -> seed -> value."""
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["noise"]), {})[int(r["seed"])] = float(r[metric])
    return cells


def _grid(corner: str, methods: list[str], columns: list[str], cell) -> list[str]:
    """The markdown lines of a methods x ``columns`` table: header, rule and one row per method, the
    cell text from ``cell(method, column)`` (None, for a cell without data, shows as "–")."""
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for m in methods:
        texts = [cell(m, c) for c in columns]
        lines.append(f"| {m} | " + " | ".join("–" if t is None else t for t in texts) + " |")
    return lines


def format_table(rows: list[dict], methods: list[str], noise_names: list[str], metric: str = "mask_AP") -> str:
    """Methods x noise settings, ``mean ± std`` over seeds (n seeds noted), best mean per column in bold."""
    cells = {k: list(v.values()) for k, v in _by_cell(rows, metric).items()}
    best = {}
    for n in noise_names:
        means = [_stats(cells[(m, n)])[0] for m in methods if (m, n) in cells]
        best[n] = max(means) if means else None

    def cell(m: str, n: str) -> str | None:
        if (m, n) not in cells:
            return None
        mean, std = _stats(cells[(m, n)])
        text = f"{mean:.1f} ± {std:.1f}" if len(cells[(m, n)]) > 1 else f"{mean:.1f}"
        return f"**{text}**" if best[n] is not None and abs(mean - best[n]) < 1e-9 else text

    lines = [f"{metric.replace('_', ' ')} on clean val, mean ± std over seeds", "",
             *_grid("method", methods, noise_names, cell)]
    counts = sorted({len(v) for v in cells.values()})
    lines += ["", f"seeds per cell: {', '.join(map(str, counts)) if counts else 'none yet'}"]
    return "\n".join(lines) + "\n"


def paired_differences(rows: list[dict], method: str, noise: str, metric: str = "mask_AP",
                       baseline: str = BASELINE) -> dict[int, float]:
    """seed -> ``metric`` of ``method`` minus that of ``baseline``, for the seeds both have at ``noise``."""
    cells = _by_cell(rows, metric)
    ours, theirs = cells.get((method, noise), {}), cells.get((baseline, noise), {})
    return {s: ours[s] - theirs[s] for s in sorted(ours) if s in theirs}


def recovered_fraction(rows: list[dict], method: str, noise: str, metric: str = "mask_AP",
                       baseline: str = BASELINE, clean: str = "clean") -> float | None:
    """``(AP_method - AP_ce,noisy) / (AP_ce,clean - AP_ce,noisy)`` at ``noise``, from means over seeds.

    The share of what noise cost CE that the method wins back (1 = all of it, 0 = none, < 0 = worse than
    CE). The numerator is the mean of the paired (same-seed) differences; None when a term is missing or
    noise did not hurt CE (denominator <= 0).
    """
    cells = _by_cell(rows, metric)
    paired = paired_differences(rows, method, noise, metric, baseline)
    ce_noisy, ce_clean = cells.get((baseline, noise)), cells.get((baseline, clean))
    if not paired or not ce_noisy or not ce_clean:
        return None
    lost = _stats(list(ce_clean.values()))[0] - _stats(list(ce_noisy.values()))[0]
    if lost <= 0:
        return None
    return _stats(list(paired.values()))[0] / lost


def peak_minus_final(curves: list[dict], method: str, noise: str, metric: str = "mask_AP") -> dict[int, tuple[float, int]]:
    """seed -> (highest ``metric`` over the evaluated epochs minus the last epoch's, the peak's epoch), for
    runs with at least two evaluated epochs. A large value means the run peaked and then memorised noise."""
    by_seed: dict[int, list[tuple[int, float]]] = {}
    for c in curves:
        if c["method"] == method and c["noise"] == noise:
            by_seed.setdefault(int(c["seed"]), []).append((int(c["epoch"]), float(c[metric])))
    out = {}
    for seed, points in sorted(by_seed.items()):
        if len(points) < 2:
            continue
        points.sort()
        peak_epoch, peak = max(points, key=lambda p: (p[1], -p[0]))
        out[seed] = (peak - points[-1][1], peak_epoch)
    return out


def _signed(v: float) -> str:
    return f"{v:+.1f}"


def format_paired(rows: list[dict], methods: list[str], noise_names: list[str], metric: str = "mask_AP") -> str:
    """Each method minus CE paired by seed: the mean, then the per-seed values in seed order."""
    others = [m for m in methods if m != BASELINE]
    if BASELINE not in methods or not others:
        return ""

    def cell(m: str, n: str) -> str | None:
        diffs = paired_differences(rows, m, n, metric)
        if not diffs:
            return None
        per_seed = " / ".join(_signed(v) for v in diffs.values())
        return f"{_signed(_stats(list(diffs.values()))[0])} ({per_seed})"

    lines = [f"{metric.replace('_', ' ')}: each method minus {BASELINE}, paired by seed (same initialisation, data "
             "order and noisy file): mean (per-seed values in seed order)", "",
             *_grid(f"method minus {BASELINE}", others, noise_names, cell)]
    seeds = sorted({int(r["seed"]) for r in rows})
    lines += ["", f"seeds: {', '.join(map(str, seeds))}"]
    return "\n".join(lines) + "\n"


def format_recovered(rows: list[dict], methods: list[str], noise_names: list[str], metric: str = "mask_AP") -> str:
    """The "recovered" rows: (AP_method - AP_ce,noisy) / (AP_ce,clean - AP_ce,noisy) per noise setting."""
    noisy = [n for n in noise_names if n != "clean"]
    others = [m for m in methods if m != BASELINE]
    if BASELINE not in methods or "clean" not in noise_names or not noisy or not others:
        return ""

    def cell(m: str, n: str) -> str | None:
        fraction = recovered_fraction(rows, m, n, metric)
        return None if fraction is None else f"{100 * fraction:.0f}%"

    lines = [f"recovered: (AP_method - AP_ce,noisy) / (AP_ce,clean - AP_ce,noisy), {metric.replace('_', ' ')} means "
             "over seeds (100% = all that noise cost CE, < 0 = below CE; – where CE lost nothing)", "",
             *_grid("recovered", others, noisy, cell)]
    return "\n".join(lines) + "\n"


def format_memorisation(curves: list[dict], methods: list[str], noise_names: list[str],
                        metric: str = "mask_AP") -> str:
    """Peak minus final of each run's val-AP curve (mean over seeds, per-seed values in seed order)."""
    table = {(m, n): peak_minus_final(curves, m, n, metric) for m in methods for n in noise_names}
    if not any(table.values()):
        return ("peak - final: no curves with two or more evaluated epochs (set train.eval_interval to evaluate "
                "during training)\n")

    def cell(m: str, n: str) -> str | None:
        if not table[(m, n)]:
            return None
        values = [d for d, _ in table[(m, n)].values()]
        return f"{_stats(values)[0]:.1f} ({' / '.join(f'{v:.1f}' for v in values)})"

    lines = [f"peak - final {metric.replace('_', ' ')} of the val curve (highest evaluated epoch minus the last): "
             "mean (per-seed values in seed order); CE falling from its peak under noise is memorisation", "",
             *_grid("peak - final", methods, noise_names, cell)]
    return "\n".join(lines) + "\n"


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean_of(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def format_audit(rows: list[dict], methods: list[str], noise_names: list[str]) -> str:
    """The audit methods' own figures per noise setting, means over seeds: how well the audit found the
    wrong labels (against ``clean_category_id``) and what the method cost relative to one run."""
    audit_rows = [r for r in rows if has_audit(r) and r["method"] in methods]
    shown = [m for m in methods if any(r["method"] == m for r in audit_rows)]
    if not shown:
        return ""

    def cells(method: str, noise: str) -> list[dict]:
        return [r for r in audit_rows if r["method"] == method and r["noise"] == noise]

    def fmt(v: float, digits: int = 3) -> str:
        return "–" if math.isnan(v) else f"{v:.{digits}f}"

    def audit_cell(m: str, n: str) -> str | None:
        c = cells(m, n)
        if not c:
            return None
        values = [_mean_of([_float(r[f]) for r in c]) for f in
                  ("audit_auroc", "audit_precision_at_recall_0.8", "audit_flagged_precision", "audit_flagged_recall")]
        if all(math.isnan(v) for v in values):  # no clean_category_id: nothing to score against
            return f"– ({fmt(_mean_of([_float(r['audit_n_flagged']) for r in c]), 0)} flagged)"
        return " / ".join(fmt(v) for v in values)

    def compute_cell(m: str, n: str) -> str | None:
        c = cells(m, n)
        if not c:
            return None
        ratios = []
        for r in c:
            total, audit_s, retrain_s = (_float(r[f]) for f in ("train_seconds", "audit_seconds", "retrain_seconds"))
            first = total - audit_s - retrain_s
            ratios.append(total / first if first > 0 else math.nan)
        return f"{fmt(_mean_of(ratios), 2)}x ({fmt(_mean_of([_float(r['audit_seconds']) for r in c]), 0)} s)"

    lines = ["audit methods: the audit of the first run on its own training file against the true labels "
             "(AUROC of 1 - label quality / precision at recall 0.8 / precision and recall of the flagged set; "
             "means over seeds; without clean_category_id, e.g. on clean labels, the number flagged)", "",
             *_grid("audit", shown, noise_names, audit_cell),
             "", "compute of the audit methods: total training seconds (first run + audit + retrain) over the "
             "first run's, mean over seeds (the audit's own seconds in brackets)", "",
             *_grid("compute", shown, noise_names, compute_cell)]
    return "\n".join(lines) + "\n"


def format_report(rows: list[dict], curves: list[dict], methods: list[str], noise_names: list[str],
                  per_class: list[dict] = ()) -> str:
    """``table.md``: the mean ± std table, the paired differences to CE, the recovered shares, the
    peak-minus-final of the curves, when the bench has audit methods their audit figures and compute, and
    with per-class rows the head / tail summary and the per-class tables (sections that lack their inputs
    are left out)."""
    parts = [format_table(rows, methods, noise_names), format_paired(rows, methods, noise_names),
             format_recovered(rows, methods, noise_names), format_memorisation(curves, methods, noise_names),
             format_audit(rows, methods, noise_names), format_head_tail(list(per_class), methods, noise_names),
             format_per_class(list(per_class), methods, noise_names)]
    return "\n".join(p for p in parts if p)


def class_order(per_class: list[dict]) -> list[tuple[str, int]]:
    """(class, training count) of the classes in ``per_class`` rows, most frequent first (ties by name)."""
    counts: dict[str, int] = {}
    for r in per_class:
        counts[r["class"]] = int(float(r["train_count"])) if r.get("train_count") not in (None, "") else -1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _class_values(per_class: list[dict], metric: str = "mask_AP") -> dict[tuple[str, str, str], dict[int, float]]:
    """(method, noise, class) -> seed -> value (classes without val objects left out)."""
    out: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in per_class:
        if r.get(metric) not in (None, ""):
            out.setdefault((r["method"], r["noise"], r["class"]), {})[int(r["seed"])] = float(r[metric])
    return out


def head_tail_split(order: list[tuple[str, int]]) -> tuple[list[str], list[str]]:
    """The head (the most frequent third of the classes, at least one) and the tail (the least frequent third)."""
    k = max(1, len(order) // 3)
    names = [name for name, _ in order]
    return names[:k], names[-k:]


def class_differences(per_class: list[dict], method: str, noise: str, metric: str = "mask_AP",
                      baseline: str = BASELINE) -> dict[str, float]:
    """class -> mean over seeds of (``method`` minus ``baseline``) ``metric``, paired by seed, at ``noise``."""
    values = _class_values(per_class, metric)
    out = {}
    for name, _ in class_order(per_class):
        ours, theirs = values.get((method, noise, name), {}), values.get((baseline, noise, name), {})
        diffs = [ours[s] - theirs[s] for s in ours if s in theirs]
        if diffs:
            out[name] = sum(diffs) / len(diffs)
    return out


def format_head_tail(per_class: list[dict], methods: list[str], noise_names: list[str],
                     metric: str = "mask_AP") -> str:
    """Head / tail mean AP per method and noise setting, and each method's worst class against CE."""
    if not per_class:
        return ""
    order = class_order(per_class)
    head, tail = head_tail_split(order)
    values = _class_values(per_class, metric)

    def group_mean(m: str, n: str, names: list[str]) -> float | None:
        per_seed: dict[int, list[float]] = {}
        for name in names:
            for seed, v in values.get((m, n, name), {}).items():
                per_seed.setdefault(seed, []).append(v)
        means = [sum(v) / len(v) for v in per_seed.values() if len(v) == len(names)]
        return _stats(means)[0] if means else None

    def cell(m: str, n: str) -> str | None:
        h, t = group_mean(m, n, head), group_mean(m, n, tail)
        if h is None and t is None:
            return None
        return f"{'–' if h is None else f'{h:.1f}'} / {'–' if t is None else f'{t:.1f}'}"

    def worst_cell(m: str, n: str) -> str | None:
        diffs = class_differences(per_class, m, n, metric)
        if not diffs:
            return None
        name = min(diffs, key=diffs.get)
        return f"{_signed(diffs[name])} ({name})"

    counts = ", ".join(f"{name} {count}" for name, count in order)
    lines = [f"head / tail: mean {metric.replace('_', ' ')} of the {len(head)} most frequent classes "
             f"({', '.join(head)}) / the {len(tail)} least frequent ({', '.join(tail)}) in the clean training file, "
             f"mean over seeds (training annotations per class: {counts})", "",
             *_grid("head / tail", methods, noise_names, cell)]
    others = [m for m in methods if m != BASELINE]
    if BASELINE in methods and others:
        lines += ["", f"worst class: the class whose {metric.replace('_', ' ')} falls most below {BASELINE}'s on the "
                  "same noisy file (mean of the paired per-seed differences); tail-safe means no class below -2",
                  "", *_grid("worst class", others, noise_names, worst_cell)]
    return "\n".join(lines) + "\n"


def format_per_class(per_class: list[dict], methods: list[str], noise_names: list[str],
                     metric: str = "mask_AP") -> str:
    """One table per noise setting: classes (most frequent first) x methods, mean ± std over seeds, and for
    the other methods the paired difference to CE in brackets."""
    if not per_class:
        return ""
    values = _class_values(per_class, metric)
    order = class_order(per_class)
    shown = [m for m in methods if any(k[0] == m for k in values)]
    sections = []
    for n in noise_names:
        if not any(k[1] == n for k in values):
            continue
        diffs = {m: class_differences(per_class, m, n, metric) for m in shown if m != BASELINE}
        lines = [f"per class, {n}: {metric.replace('_', ' ')} mean ± std over seeds (minus {BASELINE}, paired)", "",
                 "| class (train count) | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for name, count in order:
            texts = []
            for m in shown:
                seeds = values.get((m, n, name))
                if not seeds:
                    texts.append("–")
                    continue
                mean, std = _stats(list(seeds.values()))
                text = f"{mean:.1f} ± {std:.1f}" if len(seeds) > 1 else f"{mean:.1f}"
                if m in diffs and name in diffs[m]:
                    text += f" ({_signed(diffs[m][name])})"
                texts.append(text)
            lines.append(f"| {name} ({count}) | " + " | ".join(texts) + " |")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def plot_ap_vs_noise(rows: list[dict], methods: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110, sharey=True)
    for ax, kind, title in [(axes[0], "symmetric", "symmetric noise"), (axes[1], "asymmetric", "asymmetric noise")]:
        for i, m in enumerate(methods):
            pts: dict[float, list[float]] = {}
            for r in rows:
                if r["method"] == m and r["noise_kind"] in ("clean", kind):
                    pts.setdefault(float(r["noise_rate"]), []).append(float(r["mask_AP"]))
            if not pts:
                continue
            xs = sorted(pts)
            stats = [_stats(pts[x]) for x in xs]
            # one style per method, the same in both panels: colour cycles over 10, the line style beyond
            ax.errorbar([x * 100 for x in xs], [s[0] for s in stats], yerr=[s[1] for s in stats],
                        color=f"C{i % 10}", linestyle=("-", "--", ":")[i // 10 % 3], marker="os^"[i // 10 % 3],
                        capsize=3, label=m)
        ax.set_title(title)
        ax.set_xlabel("noise rate (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mask AP on clean val")
    handles: dict[str, Any] = {}
    for ax in axes:  # a method may have points in one panel only
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.tight_layout()
    if handles:  # beside the panels, where it hides no curve
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
