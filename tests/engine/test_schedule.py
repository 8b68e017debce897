import pytest
import torch

from noisyseg.engine.schedule import build_scheduler, lr_factor


def test_warmup_is_linear_from_ratio_to_one():
    assert lr_factor(0, 100, 10, 0.001, [], 0.1) == pytest.approx(0.001)
    assert lr_factor(5, 100, 10, 0.001, [], 0.1) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, 10, 0.001, [], 0.1) == 1.0


def test_steps_apply_from_the_first_iteration_of_the_step_epoch():
    assert lr_factor(199, 20, 0, 1.0, [10, 11], 0.1) == 1.0
    assert lr_factor(200, 20, 0, 1.0, [10, 11], 0.1) == pytest.approx(0.1)
    assert lr_factor(220, 20, 0, 1.0, [10, 11], 0.1) == pytest.approx(0.01)


def test_scheduler_sets_optimizer_lr_per_iteration():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02)
    sched = build_scheduler(opt, iters_per_epoch=4, warmup_iters=2, warmup_ratio=0.5, steps=[1], gamma=0.1)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01, 0.015, 0.02, 0.02, 0.002, 0.002])
