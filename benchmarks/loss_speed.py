"""Time of the task-specific loss vs cross-entropy for one training step's RoIs.

N = 512 RoIs x 16 images, K = 80 classes (COCO), median of repeated runs, forward and forward+backward,
on CPU (and CUDA when available). Goal: the task-specific loss within 2x of cross-entropy.

    .venv/bin/python benchmarks/loss_speed.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from noisyseg.losses import cross_entropy, task_specific_loss


def median_ms(fn, logits, labels, backward: bool, repeats: int, device: torch.device) -> float:
    times = []
    for i in range(repeats + 5):
        x = logits.detach().requires_grad_(backward)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(x, labels)
        if isinstance(out, tuple):
            out = out[0]
        if backward:
            out.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    n, k = 512 * 16, 80
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    fns = {
        "torch F.cross_entropy": lambda z, y: F.cross_entropy(z, y),
        "noisyseg cross_entropy": cross_entropy,
        "task_specific_loss (rce)": lambda z, y: task_specific_loss(z, y, return_counts=True),
        "task_specific_loss (gce, PON)": lambda z, y: task_specific_loss(z, y, robust="gce", pon_threshold=6.0,
                                                                        return_counts=True),
    }
    print(f"N = {n} RoIs, K = {k} classes, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    for device in devices:
        g = torch.Generator().manual_seed(0)
        logits = (torch.randn(n, k + 1, generator=g) * 3).to(device)
        labels = torch.where(torch.rand(n, generator=g) < 0.75, 0, torch.randint(1, k + 1, (n,), generator=g)).to(device)
        for backward in (False, True):
            res = {name: median_ms(fn, logits, labels, backward, args.repeats, device) for name, fn in fns.items()}
            ref = res["noisyseg cross_entropy"]
            print(f"[{device.type}] {'forward+backward' if backward else 'forward'}")
            for name, ms in res.items():
                print(f"  {name:32s} {ms:8.3f} ms   {ms / ref:5.2f}x noisyseg CE")


if __name__ == "__main__":
    main()
