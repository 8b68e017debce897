"""Scoring speed of ``noisyseg audit``: annotations per second through the RoI box head, and what that
means for COCO train (860k annotations).

Makes a shapes set (or reads ``--data``/``--image-root``), builds a model of ``--model`` from the packaged
shapes config with random weights (the scoring pass runs backbone -> RoI pool -> box head on the given
boxes, no RPN and no NMS, so its cost does not depend on what the weights learned), saves it as a noisyseg
checkpoint and times :func:`noisyseg.audit.score.score_annotations` (image reading included, model loading
not; the best of ``--repeats`` passes after one warm-up pass). Prints annotations/s, images/s and the time
860k annotations would take at that rate.

    .venv/bin/python benchmarks/audit_speed.py [--model maskrcnn_tiny] [--images 224] [--size 128]
        [--threads 1] [--device cpu] [--batch-size 8] [--repeats 2] [--data TRAIN.json --image-root DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

COCO_TRAIN_ANNOTATIONS = 860_001


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="maskrcnn_tiny", help="model preset (default maskrcnn_tiny)")
    p.add_argument("--images", type=int, default=224, help="shapes images to make (default 224, the demo's old size)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--data", type=Path, help="score this COCO file instead of a made shapes set")
    p.add_argument("--image-root", type=Path, help="its image folder (with --data)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    import torch
    import yaml

    from noisyseg.audit.score import score_annotations
    from noisyseg.config import Config
    from noisyseg.configs import packaged_config
    from noisyseg.data.coco import LabelMap, load_coco
    from noisyseg.data.shapes import make_shapes
    from noisyseg.engine.build import model_from_config
    from noisyseg.engine.checkpoint import save_checkpoint

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.data is not None:
            train_json, image_root = a.data, a.image_root or a.data.parent / "images"
        else:
            data = make_shapes(tmp / "shapes", n_train=a.images, n_val=1, size=a.size, seed=0, class_colours=True,
                               progress=False)
            train_json, image_root = Path(data.train_json), Path(data.image_root)
        coco = load_coco(train_json)
        tree = yaml.safe_load(packaged_config("shapes_tiny").read_text())
        tree["model"]["name"] = a.model
        tree["data"].update(train_json=str(train_json), val_json=str(train_json), image_root=str(image_root),
                            test_min_size=a.size)
        cfg = Config.model_validate(tree)
        label_map = LabelMap.from_categories(coco["categories"])
        torch.manual_seed(0)
        model = model_from_config(cfg, label_map.num_classes)
        ckpt = save_checkpoint(tmp / "run" / "checkpoints" / "last.pt", {
            "model": model.state_dict(), "epoch": 1, "config": cfg.model_dump(mode="json"),
            "label_map": label_map.to_dict()})
        runs = []
        for _ in range(a.repeats + 1):  # the first pass warms up allocators and file caches
            t0 = time.perf_counter()
            scores = score_annotations([ckpt], coco, train_json, image_root, a.device, a.batch_size, 0, False)
            runs.append((time.perf_counter() - t0, scores.seconds))
        n = len(scores.annotation_ids)
        best = min(s for _, s in runs[1:])
        n_images = len({int(i) for i in scores.image_ids.tolist()})
        rate = n / best
        print(json.dumps({
            "model": a.model, "device": a.device, "threads": a.threads, "batch_size": a.batch_size,
            "size": a.size, "images": n_images, "annotations": n, "scoring_seconds": round(best, 3),
            "annotations_per_second": round(rate, 1), "images_per_second": round(n_images / best, 1),
            "coco_train_hours_at_this_rate": round(COCO_TRAIN_ANNOTATIONS / rate / 3600, 2),
        }, indent=1))


if __name__ == "__main__":
    main()
