"""``noisyseg demo``: noisy labels hurt, the task-specific loss helps — on a laptop CPU, from scratch.

Builds (or reuses) the shapes data set (with class colours), injects seeded symmetric noise into train (val stays clean),
trains ``maskrcnn_tiny`` with plain cross-entropy and with the stage-wise task-specific loss, evaluates
both on clean val, and writes a table, ``report.md``, an AP plot and prediction overlays.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from noisyseg.utils.io import atomic_write_bytes, atomic_write_text

OVERLAY_SCORE = 0.3
METHODS = {
    # name: (loss name, warm-up epochs as a fraction of all epochs)
    "ce": ("ce", 0.0),
    "lncis": ("lncis", 0.5),
}


@dataclass
class DemoSettings:
    out: Path = Path("runs/demo")
    noise_rate: float = 0.4
    seed: int = 0
    epochs: int = 10
    n_train: int = 224
    n_val: int = 100
    size: int = 128
    progress: bool = True


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoSettings()
    p = sub.add_parser("demo", help="CE vs the task-specific loss under 40%% symmetric noise, on CPU",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--noise", type=float, default=d.noise_rate, dest="noise_rate", help="symmetric noise rate")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--train", type=int, default=d.n_train, dest="n_train", help="training images")
    p.add_argument("--val", type=int, default=d.n_val, dest="n_val", help="validation images")
    p.add_argument("--size", type=int, default=d.size, help="image size in pixels")
    p.add_argument("--no-progress", action="store_false", dest="progress")
    p.set_defaults(func=lambda a: run_demo(DemoSettings(a.out, a.noise_rate, a.seed, a.epochs, a.n_train, a.n_val,
                                                        a.size, a.progress)) and 0)


def noisy_train_file(clean_json: Path, out_json: Path, rate: float, seed: int) -> dict:
    """Write ``out_json`` = ``clean_json`` with seeded symmetric noise (reused when already there)."""
    from noisyseg.noise import inject
    from noisyseg.utils.io import read_json

    if out_json.exists():
        noisy = read_json(out_json)
        block = noisy.get("info", {}).get("noise", {})
        if block.get("rate") == rate and block.get("seed") == seed and block.get("kind") == "symmetric":
            return block
    noisy, report = inject(read_json(clean_json), kind="symmetric", rate=rate, seed=seed)
    atomic_write_text(out_json, json.dumps(noisy))
    return report


def run_demo(s: DemoSettings) -> dict:
    from noisyseg.config import config_from_dict
    from noisyseg.configs import packaged_config
    from noisyseg.data.shapes import make_shapes
    from noisyseg.engine.trainer import train
    import yaml

    t0 = time.time()
    s.out.mkdir(parents=True, exist_ok=True)
    # Class colours: without them a model this small, trained this briefly, finds the shapes but names them
    # near chance even on clean labels, and then label noise has nothing to spoil (see noisyseg.data.shapes).
    data = make_shapes(s.out / "data", n_train=s.n_train, n_val=s.n_val, size=s.size, seed=s.seed,
                       class_colours=True, progress=s.progress)
    tag = f"sym{round(s.noise_rate * 100)}"
    noisy_json = Path(data.train_json).with_name(f"train_{tag}_seed{s.seed}.json")
    report = noisy_train_file(Path(data.train_json), noisy_json, s.noise_rate, s.seed)
    print(f"[demo] {noisy_json}: {report.get('realised_rate', s.noise_rate):.3f} of training labels changed", flush=True)

    base = yaml.safe_load(packaged_config("shapes_tiny").read_text())
    results = {}
    for method, (loss, warm_frac) in METHODS.items():
        run_dir = s.out / method
        tree = json.loads(json.dumps(base))
        tree["seed"] = s.seed
        tree["data"].update(train_json=str(noisy_json), val_json=str(data.val_json), image_root=str(data.image_root),
                            test_min_size=s.size, train_min_size=[int(s.size * 0.875), int(s.size * 1.125)])
        tree["train"]["epochs"] = s.epochs
        tree["train"]["lr_steps"] = [max(1, round(s.epochs * 5 / 6))]
        tree["loss"].update(name=loss, warmup_epochs=int(s.epochs * warm_frac))
        cfg = config_from_dict(tree, source=f"demo[{method}]")
        done = run_dir / "metrics.json"
        if done.exists() and (run_dir / "config.yaml").exists() and \
                yaml.safe_load((run_dir / "config.yaml").read_text()) == cfg.model_dump(mode="json"):
            print(f"[demo] {method}: reusing the finished run in {run_dir}", flush=True)
            results[method] = json.loads(done.read_text())
            continue
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"[demo] training {method} ({s.epochs} epochs, loss {loss}, CE warm-up "
              f"{cfg.loss.warmup_epochs} epochs)", flush=True)
        res = train(cfg, run_dir, progress=s.progress)
        results[method] = {"train_seconds": res.train_seconds, **res.metrics}

    table = format_table(results)
    print(table)
    plot_path = plot_ap(results, s.out / "ap.png", f"{tag} noise")
    overlays = write_overlays(s.out, data, list(METHODS))
    wall = time.time() - t0
    report_md = "\n".join([
        "# noisyseg demo",
        "",
        f"Shapes data set ({s.n_train} train / {s.n_val} val images, {s.size} px), {round(s.noise_rate * 100)}% "
        f"symmetric class noise on train (seed {s.seed}), clean val. `maskrcnn_tiny` from scratch, "
        f"{s.epochs} epochs.",
        "",
        table,
        "",
        f"![AP]({plot_path.name})",
        "",
        f"Prediction overlays (image, then one panel per method: {', '.join(METHODS)}; score >= {OVERLAY_SCORE}): " + ", ".join(f"[{p.relative_to(s.out)}]({p.relative_to(s.out)})" for p in overlays),
        "",
        f"Wall time: {wall:.0f} s.",
        "",
    ])
    atomic_write_text(s.out / "report.md", report_md)
    print(f"[demo] wrote {s.out / 'report.md'} ({wall:.0f} s)")
    return results


def format_table(results: dict) -> str:
    lines = ["| method | mask AP | box AP | mask AP50 | train s |", "|---|---|---|---|---|"]
    for method, m in results.items():
        lines.append(f"| {method} | {m['segm']['AP']:.1f} | {m['bbox']['AP']:.1f} | {m['segm']['AP50']:.1f} | "
                     f"{m.get('train_seconds', float('nan')):.0f} |")
    return "\n".join(lines)


def plot_ap(results: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    x = range(len(methods))
    for offset, (key, label) in enumerate([("segm", "mask AP"), ("bbox", "box AP")]):
        vals = [results[m][key]["AP"] for m in methods]
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


def write_overlays(out: Path, data, methods: list[str], n_images: int = 3) -> list[Path]:
    """Side-by-side overlays (one column per method) for the first val images."""
    import numpy as np
    import torch
    from PIL import Image

    from noisyseg.engine.predict import draw_overlay, load_trained_model
    from noisyseg.utils.io import read_json

    val = read_json(data.val_json)
    models = {m: load_trained_model(out / m / "checkpoints" / "last.pt")[::2] for m in methods}
    paths = []
    for im in val["images"][:n_images]:
        with Image.open(Path(data.image_root) / im["file_name"]) as pil:
            img = torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)
        panels = [img]
        with torch.no_grad():
            for m in methods:
                model, label_map = models[m]
                pred = model([img.float() / 255])[0]
                keep = pred["scores"] >= OVERLAY_SCORE
                panels.append(draw_overlay(img, pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep],
                                           pred["masks"][keep][:, 0] > 0.5, label_map.names))
        grid = torch.cat(panels, dim=2).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(buf, format="PNG")
        paths.append(atomic_write_bytes(out / "overlays" / f"val_{im['id']}.png", buf.getvalue()))
    return paths
