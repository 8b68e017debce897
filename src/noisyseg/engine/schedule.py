"""Optimizer and learning-rate schedule: SGD; linear warm-up over iterations, then x gamma steps at given epochs."""

from __future__ import annotations

import torch


def lr_factor(iteration: int, iters_per_epoch: int, warmup_iters: int, warmup_ratio: float,
              steps: list[int], gamma: float) -> float:
    """Multiplier of the base lr at ``iteration`` (0-based, counted over the whole run).

    Warm-up rises linearly from ``warmup_ratio`` to 1 over ``warmup_iters``; after epoch e for each e in
    ``steps`` (i.e. from iteration e * iters_per_epoch on) the rate is multiplied by ``gamma``.
    """
    factor = 1.0
    if iteration < warmup_iters:
        factor = warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    epoch = iteration // max(iters_per_epoch, 1)
    return factor * gamma ** sum(1 for s in steps if epoch >= s)


def build_scheduler(optimizer: torch.optim.Optimizer, iters_per_epoch: int, warmup_iters: int,
                    warmup_ratio: float, steps: list[int], gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor` (call ``step()`` after every iteration)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters_per_epoch, warmup_iters, warmup_ratio, steps, gamma)
    )


def build_optimizer(params: list[torch.nn.Parameter], lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum and weight decay over ``params`` (the paper's optimizer)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
