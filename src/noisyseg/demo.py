"""``noisyseg demo``: noisy labels hurt, the task-specific loss helps — on a laptop CPU, from scratch.

A two-cell bench (:func:`noisyseg.bench.run_bench`) with its own defaults: builds (or reuses) the shapes
data set (with class colours), injects seeded symmetric noise into train (val stays clean), trains
``maskrcnn_tiny`` with plain cross-entropy and with the stage-wise task-specific loss, evaluates both on
clean val, audits the task-specific run's own noisy training file (``noisyseg audit``: how many of the
injected errors it finds) and writes ``report.md`` (the table, the audit's figures and its contact sheet),
``ap.png``, prediction overlays and ``audit/``. Finished runs are reused; a run made with other settings is
trained again.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import atomic_write_bytes, atomic_write_text

OVERLAY_SCORE = 0.3
METHODS = ["ce", "lncis"]
LNCIS_WARMUP_FRACTION = 0.5  # the paper's stages: CE for the first half of the epochs
DEFAULT_OUT = Path("runs/demo")
AUDITED = "lncis"  # the run whose model audits the noisy training file
# 160 training images keep the demo (two runs of 10 epochs, the audit, the report) within 5 minutes on a
# 2-core CPU: 224 images took 358 s, 346 of them training, which scales with the number of images.
DEFAULTS = {"noise_rate": 0.4, "seed": 0, "epochs": 10, "n_train": 160, "n_val": 100, "size": 128}


def demo_config(data, epochs: int, size: int, seed: int, threads: int | None = None) -> dict:
    """The demo's base config tree: the packaged ``shapes_tiny`` config on ``data`` (a shapes
    :class:`~noisyseg.data.shapes.SetPaths`), ``epochs`` epochs with the lr step at 5/6 of them, and the
    task-specific loss after a CE stage of half the epochs; ``threads`` torch CPU threads (None: the
    packaged config's ``train.threads``)."""
    import yaml

    from noisyseg.configs import packaged_config

    tree = yaml.safe_load(packaged_config("shapes_tiny").read_text())
    tree["seed"] = seed
    tree["data"].update(train_json=str(data.train_json), val_json=str(data.val_json), image_root=str(data.image_root),
                        test_min_size=size, train_min_size=[int(size * 0.875), int(size * 1.125)])
    tree["train"]["epochs"] = epochs
    tree["train"]["lr_steps"] = [max(1, round(epochs * 5 / 6))]
    tree["loss"]["warmup_epochs"] = int(epochs * LNCIS_WARMUP_FRACTION)
    if threads is not None:
        tree["train"]["threads"] = threads
    return tree


def run_demo(out_dir: str | Path = DEFAULT_OUT, *, noise_rate: float = DEFAULTS["noise_rate"],
             seed: int = DEFAULTS["seed"], epochs: int = DEFAULTS["epochs"], n_train: int = DEFAULTS["n_train"],
             n_val: int = DEFAULTS["n_val"], size: int = DEFAULTS["size"], threads: int | None = None,
             progress: bool = True) -> dict[str, dict]:
    """Run the demo into ``out_dir``; return method -> its results row (:data:`noisyseg.bench.CSV_FIELDS`).

    ``out_dir`` gets ``data/`` (the shapes set), the bench files and folders (``noisy/``, ``runs/``,
    ``results.csv``, ...), ``audit/`` (:func:`noisyseg.audit.audit` of the lncis run on its noisy training
    file: label_issues.csv, summary.md/.json, review.html, contact_sheet.png) and the report:
    ``report.md``, ``ap.png`` and ``overlays/val_<id>.png``. ``threads``: torch CPU threads for training
    and evaluation (default: the packaged ``shapes_tiny`` config's ``train.threads``; one is fastest on a
    busy machine).
    """
    from noisyseg.bench import NoiseSetting, run_bench
    from noisyseg.data.shapes import make_shapes
    from noisyseg.utils.io import ensure_output_dir

    if isinstance(noise_rate, bool) or not isinstance(noise_rate, (int, float)) or not 0.0 <= noise_rate <= 1.0:
        raise NoisysegError(f"--noise: the symmetric noise rate must be in [0, 1], got {noise_rate!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise NoisysegError(f"--threads: expected a number of CPU threads >= 1, got {threads!r}")
    t0 = time.time()
    out = ensure_output_dir(out_dir, "demo folder")
    # Class colours: without them a model this small, trained this briefly, finds the shapes but names them
    # near chance even on clean labels, and then label noise has nothing to spoil (see noisyseg.data.shapes).
    data = make_shapes(out / "data", n_train=n_train, n_val=n_val, size=size, seed=seed, class_colours=True,
                       progress=progress)
    setting = NoiseSetting(f"sym{noise_rate:g}", "symmetric", float(noise_rate))
    rows = run_bench(demo_config(data, epochs, size, seed, threads), METHODS, [setting], [seed], out, progress=progress,
                     on_changed="retrain", write_tables=False, tag="demo")
    results = {r["method"]: r for r in rows if r["noise"] == setting.name and int(r["seed"]) == seed}

    table = format_table(results)
    print(table)
    percent = round(noise_rate * 100)
    plot_path = plot_ap(results, out / "ap.png", f"sym{percent} noise")
    overlays = write_overlays(out, data, setting.name, seed)
    summary = audit_run(out, setting.name, seed, progress)
    audit_md = format_audit(summary)
    print(audit_md)
    wall = time.time() - t0
    report_md = "\n".join([
        "# noisyseg demo",
        "",
        f"Shapes data set ({n_train} train / {n_val} val images, {size} px), {percent}% "
        f"symmetric class noise on train (seed {seed}), clean val. `maskrcnn_tiny` from scratch, "
        f"{epochs} epochs.",
        "",
        table,
        "",
        f"![AP]({plot_path.name})",
        "",
        f"Prediction overlays (image, then one panel per method: {', '.join(METHODS)}; score >= {OVERLAY_SCORE}): "
        + ", ".join(f"[{p.relative_to(out)}]({p.relative_to(out)})" for p in overlays),
        "",
        audit_md,
        "",
        f"Wall time: {wall:.0f} s.",
        "",
    ])
    atomic_write_text(out / "report.md", report_md)
    print(f"[demo] wrote {out / 'report.md'} ({wall:.0f} s)")
    return results


def audit_run(out: Path, noise: str, seed: int, progress: bool = True) -> dict:
    """Audit the lncis run on the noisy file it trained on, into ``out/audit``; return the summary
    (:func:`noisyseg.audit.audit`'s ``summary.json``: counts, and the figures against the injected errors
    under ``"truth"`` when the file records them). An audit made before from the same checkpoint and file
    (``audit/demo_audit.json`` records their sha256) is reused."""
    import hashlib

    from noisyseg.audit import audit
    from noisyseg.bench import run_dir_of
    from noisyseg.engine.run_folder import RunFolder
    from noisyseg.utils.io import atomic_write_json, read_json

    run = RunFolder(run_dir_of(out, AUDITED, noise, seed))
    cfg = run.read_config_tree()
    train_json = Path(cfg["data"]["train_json"])
    inputs = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (run.last_checkpoint, train_json)}
    record_path = out / "audit" / "demo_audit.json"
    if record_path.is_file() and (out / "audit" / "contact_sheet.png").is_file():
        record = read_json(record_path, "demo audit record")
        if record.get("inputs") == inputs:
            return record["summary"]
    record_path.unlink(missing_ok=True)
    result = audit(run.path, train_json, out_dir=out / "audit", device=cfg["train"]["device"],
                   batch_size=cfg["train"]["batch_size"], progress=progress)
    atomic_write_json(record_path, {"inputs": inputs, "summary": result.summary}, indent=1)
    return result.summary


def format_audit(summary: dict) -> str:
    """The report's audit section: how many of the injected errors the audit found, and its contact sheet."""
    n, flagged = summary["n_annotations"], summary["n_flagged"]
    lines = ["## Finding the wrong labels", "",
             f"`noisyseg audit` scored each of the {n} training annotations with the {AUDITED} model (its "
             "ground-truth box through the RoI box head) and flagged "
             f"{flagged} as likely mislabeled (cleanlab's `find_label_issues`; "
             f"{summary['annotations_per_second']:.0f} annotations/s)."]
    truth = summary.get("truth")
    if truth and truth["n_wrong"]:
        lines[-1] += (f" Of the {truth['n_wrong']} labels the noise changed it found {truth['n_flagged_wrong']}: "
                      f"recall {truth['flagged_recall']:.2f}, precision {truth['flagged_precision']:.2f} "
                      f"({truth['n_flagged_wrong']} of the {flagged} flagged are wrong); AUROC of its ranking "
                      f"{truth['auroc']:.3f}, precision at recall 0.8 {truth['precision_at_recall_0.8']:.2f}; its "
                      f"suggested class is right for {truth['suggestion_accuracy_wrong']:.0%} of the wrong labels.")
    else:
        lines[-1] += " The training file has no injected errors to compare with."
    lines += ["", "The most suspicious annotations first (given -> suggested class; the whole list in "
              "[audit/review.html](audit/review.html), the figures in [audit/summary.md](audit/summary.md)):",
              "", "![the most suspicious annotations](audit/contact_sheet.png)", "",
              "Review every flagged annotation in [audit/review.html](audit/review.html) (keys k keep, r relabel "
              "to the suggestion, i ignore its class, d drop; then Export), and apply the decisions with "
              f"`noisyseg apply-decisions decisions_{str(summary.get('audit_id', '<id>'))[:8]}.json --data "
              f"{summary.get('data', 'TRAIN.json')} -o reviewed.json`: only the annotations you decided change."]
    return "\n".join(lines)


def format_table(results: dict[str, dict]) -> str:
    """Markdown table of method -> results row: mask AP, box AP, mask AP50, training seconds."""
    lines = ["| method | mask AP | box AP | mask AP50 | train s |", "|---|---|---|---|---|"]
    for method, r in results.items():
        lines.append(f"| {method} | {float(r['mask_AP']):.1f} | {float(r['box_AP']):.1f} | "
                     f"{float(r['mask_AP50']):.1f} | {float(r['train_seconds']):.0f} |")
    return "\n".join(lines)


def plot_ap(results: dict[str, dict], path: Path, title: str) -> Path:
    """Bar chart of mask and box AP per method (method -> results row), written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    x = range(len(methods))
    for offset, (key, label) in enumerate([("mask_AP", "mask AP"), ("box_AP", "box AP")]):
        vals = [float(results[m][key]) for m in methods]
        bars = ax.bar([i + (offset - 0.5) * 0.38 for i in x], vals, width=0.38, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(x), methods)
    ax.set_ylabel("AP on clean val (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_overlays(out: Path, data, noise: str, seed: int, n_images: int = 3) -> list[Path]:
    """Side-by-side overlays of the first ``n_images`` val images: the image, then one panel per method."""
    import torch

    from noisyseg.bench import run_dir_of
    from noisyseg.data.images import load_rgb
    from noisyseg.engine.predict import load_trained_model
    from noisyseg.engine.run_folder import RunFolder
    from noisyseg.utils.draw import draw_overlay, write_png
    from noisyseg.utils.io import read_json

    val = read_json(data.val_json)
    models = {m: load_trained_model(RunFolder(run_dir_of(out, m, noise, seed)).last_checkpoint)[::2]
              for m in METHODS}
    paths = []
    for im in val["images"][:n_images]:
        img = load_rgb(Path(data.image_root) / im["file_name"])
        panels = [img]
        with torch.no_grad():
            for m in METHODS:
                model, label_map = models[m]
                pred = model([img.float() / 255])[0]
                keep = pred["scores"] >= OVERLAY_SCORE
                panels.append(draw_overlay(img, pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep],
                                           pred["masks"][keep][:, 0] > 0.5, label_map.names))
        paths.append(write_png(out / "overlays" / f"val_{im['id']}.png", torch.cat(panels, dim=2), scale=2))
    return paths
