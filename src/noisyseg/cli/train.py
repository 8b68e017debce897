"""``noisyseg train``, ``eval`` and ``predict``: argument parsing over the engine's library functions
(:func:`~noisyseg.engine.trainer.train`, :func:`~noisyseg.engine.evaluate.evaluate_run`,
:func:`~noisyseg.engine.predict.predict_images`); torch is imported only when a command runs."""

from __future__ import annotations

import argparse
import os
import sys

DEVICE_HELP = "auto (CUDA when available) | cpu | cuda | cuda:N"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train Mask R-CNN from a YAML config",
                       description="Train from CONFIG.yaml. Several processes (CPU or GPU): --nproc N, or "
                                   "torchrun --nproc_per_node N -m noisyseg train CONFIG.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.02 (repeatable)")
    p.add_argument("-o", "--out", help="run folder (default: the config's out_dir, else runs/noisyseg)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (with the run's own config)")
    p.add_argument("--nproc", type=int, default=1, help="train with N processes on this machine (gloo on CPU, nccl on GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars; one summary line per epoch")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="COCO box and mask AP of a trained model on the clean val set",
                       description="Writes metrics.json (box and mask AP, AP50, AP75, S/M/L, per class) and "
                                   "detections.json (COCO results in the data set's own category ids). The final "
                                   "last.pt of a finished run on its own val set goes to the run folder (its final "
                                   "record, epoch and training time kept); any other checkpoint or val set goes to "
                                   "RUN/eval/<checkpoint>/, so the run's record is never written over.")
    p.add_argument("run", help="a run folder (uses its config.yaml and checkpoints/last.pt) or a YAML config")
    p.add_argument("--checkpoint", help="checkpoint: a file, or a name in RUN/checkpoints (epoch_3, ce_stage_end; "
                                        "default last)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the val set or how the model predicts: data.val_json, data.val_image_root, "
                        "data.image_root, data.num_workers, model.score_threshold, model.detections_per_image, "
                        "data.test_min_size, data.max_size (e.g. --set model.score_threshold=0.001)")
    p.add_argument("--out", help="folder to write metrics.json and detections.json to (default: see above)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="predict on images: overlays and a COCO results json",
                       description="Run a trained checkpoint on image files; write one overlay PNG per image "
                                   "(boxes, masks, class names and scores at or above --score-threshold) and "
                                   "results.json (COCO results in the data set's own category ids) into OUT. "
                                   "No input image is ever written over.")
    p.add_argument("checkpoint", help="a noisyseg checkpoint (.pt)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.set_defaults(func=_predict)


def _train(args) -> int:
    from noisyseg.config import load_config
    from noisyseg.errors import NoisysegError

    cfg = load_config(args.config, args.overrides)  # validate before launching anything
    if args.nproc < 1:
        raise NoisysegError(f"--nproc {args.nproc}: expected a number of processes >= 1")
    if args.nproc > 1:
        return _launch(args, cfg)
    from noisyseg.engine.trainer import train

    result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, inputs=[args.config])
    if result.metrics:
        from noisyseg.eval import format_metrics_table

        print(format_metrics_table(result.metrics))
        print(f"run folder: {result.out_dir}")
    return 0


def _launch(args, cfg) -> int:
    """``train --nproc N``: check what can be checked here, then run N copies of this command without it."""
    from noisyseg.engine.distributed import run_processes, select_device
    from noisyseg.errors import NoisysegError
    from noisyseg.utils.io import ensure_output_dir

    if "WORLD_SIZE" in os.environ:
        raise NoisysegError("--nproc cannot be used inside a torchrun launch")
    select_device(cfg.train.device, "train.device")  # the loss was checked when the config was loaded
    ensure_output_dir(args.out or cfg.out_dir or "runs/noisyseg", "run folder")
    cmd = [sys.executable, "-m", "noisyseg", "train", args.config]
    for o in args.overrides:
        cmd += ["--set", o]
    if args.out:
        cmd += ["--out", args.out]
    if args.resume:
        cmd.append("--resume")
    if args.no_progress:
        cmd.append("--no-progress")
    return run_processes(args.nproc, cmd)


def _eval(args) -> int:
    from noisyseg.engine.evaluate import evaluate_run
    from noisyseg.eval import format_metrics_table

    metrics, paths = evaluate_run(args.run, checkpoint=args.checkpoint, overrides=args.overrides, out_dir=args.out,
                                  device=args.device, progress=not args.no_progress)
    print(format_metrics_table(metrics))
    print(f"wrote {paths['metrics']} and {paths['detections']}")
    return 0


def _predict(args) -> int:
    from noisyseg.engine.distributed import select_device
    from noisyseg.engine.predict import predict_images

    path = predict_images(args.checkpoint, args.images, args.out, args.score_threshold, select_device(args.device))
    print(f"wrote {len(args.images)} overlays and {path}")
    return 0
