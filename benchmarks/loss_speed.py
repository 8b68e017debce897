"""Speed of the task-specific loss against cross-entropy for one training step's sampled RoIs.

N = 512 RoIs/image x 16 images = 8192 RoIs, K = 80 classes (COCO), 25% foreground labels. For each
device (CPU, and CUDA when available) it prints the median time per call of

- torch.nn.functional.cross_entropy (reference),
- noisyseg cross_entropy,
- task_specific_loss as the RoI head calls it (robust="rce", partition counts returned),
- task_specific_loss with robust="gce" and the PON threshold, and with robust="apl",

for "forward" (logits require grad, so the autograd graph is recorded as in training, but no backward)
and "forward+backward", with the ratio to noisyseg cross_entropy. Goal: task-specific within 2x.

The functions are timed round-robin, each sample a block of ``--inner`` calls, so a load change on a
shared machine hits every function alike; the figure is the median over ``--repeats`` samples. On a
busy machine, ``--threads 1 --clock cpu`` (CPU time of this process instead of wall-clock time; CPU
device only) gives much steadier figures.

    .venv/bin/python benchmarks/loss_speed.py [--repeats 20] [--inner 10] [--threads T] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as TF

from noisyseg.losses import cross_entropy, task_specific_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], object]

FUNCTIONS: dict[str, LossFn] = {
    "torch F.cross_entropy": lambda z, y: TF.cross_entropy(z, y),
    "noisyseg cross_entropy": cross_entropy,
    "task_specific_loss rce +counts": lambda z, y: task_specific_loss(z, y, return_counts=True),
    "task_specific_loss gce+PON": lambda z, y: task_specific_loss(z, y, robust="gce", pon_threshold=6.0),
    "task_specific_loss apl": lambda z, y: task_specific_loss(z, y, robust="apl"),
}
BASELINE = "noisyseg cross_entropy"
MAIN = "task_specific_loss rce +counts"


def _one_call(fn: LossFn, logits: torch.Tensor, labels: torch.Tensor, backward: bool) -> None:
    x = logits.detach().requires_grad_(True)
    out = fn(x, labels)
    loss = out[0] if isinstance(out, tuple) else out
    if backward:
        loss.backward()


def time_all(
    logits: torch.Tensor, labels: torch.Tensor, backward: bool, repeats: int, inner: int, clock: str
) -> dict[str, float]:
    """Median milliseconds per call of every function in FUNCTIONS, timed round-robin.

    ``clock`` "wall" uses time.perf_counter, "cpu" time.process_time (CPU only).
    """
    cuda = logits.device.type == "cuda"
    now = time.process_time if clock == "cpu" and not cuda else time.perf_counter
    samples: dict[str, list[float]] = {name: [] for name in FUNCTIONS}
    for round_ in range(repeats + 2):  # the first two rounds warm up caches and allocators
        for name, fn in FUNCTIONS.items():
            if cuda:
                torch.cuda.synchronize()
            start = now()
            for _ in range(inner):
                _one_call(fn, logits, labels, backward)
            if cuda:
                torch.cuda.synchronize()
            if round_ >= 2:
                samples[name].append((now() - start) * 1000 / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20, help="timed samples per function (median reported)")
    ap.add_argument("--inner", type=int, default=10, help="calls per sample")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall-clock time, or this process's CPU time (CPU device only; CUDA is always wall)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n, k = 512 * 16, 80
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k + 1, generator=gen) * 3
    foreground = torch.rand(n, generator=gen) < 0.25
    labels = torch.where(foreground, torch.randint(1, k + 1, (n,), generator=gen), 0)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"N = {n} RoIs, K = {k} classes, float32; torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"thread(s); median of {args.repeats} samples x {args.inner} calls, functions interleaved; "
          f"{args.clock} clock")
    summary = []
    for device in devices:
        z, y = logits.to(device), labels.to(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for backward in (False, True):
            mode = "forward+backward" if backward else "forward"
            times = time_all(z, y, backward, args.repeats, args.inner, args.clock)
            print(f"[{name}] {mode}")
            for fn_name, ms in times.items():
                print(f"  {fn_name:32s} {ms:8.3f} ms   {ms / times[BASELINE]:5.2f}x noisyseg CE   "
                      f"{ms / times['torch F.cross_entropy']:5.2f}x torch CE")
            summary.append(f"{device.type} {mode}: {times[MAIN] / times[BASELINE]:.2f}x")
    print("task_specific_loss / cross_entropy: " + ", ".join(summary) + " (goal <= 2x)")


if __name__ == "__main__":
    main()
