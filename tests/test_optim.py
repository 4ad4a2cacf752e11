"""The stacked optimizers and schedules against torch.optim / torch.optim.lr_scheduler as the oracle."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import RunConfig
from engine.optim import StackedOptimizer, scheduled_lr

CASES = [
    dict(optimizer="sgd", lr=0.1, momentum=None),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    dict(optimizer="adam", lr=0.01),
    dict(optimizer="adam", lr=0.003, weight_decay=1e-2),
    dict(optimizer="adamw", lr=0.01, weight_decay=0.1),
    dict(optimizer="rmsprop", lr=0.005),
    dict(optimizer="rmsprop", lr=0.005, momentum=0.5, weight_decay=1e-3),
]


def torch_optimizer(param: torch.Tensor, config: RunConfig) -> torch.optim.Optimizer:
    kw = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        return torch.optim.SGD([param], momentum=config.momentum, nesterov=config.nesterov, **kw)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop([param], momentum=config.momentum, **kw)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls([param], **kw)


@pytest.mark.parametrize("fields", CASES, ids=[str(c) for c in CASES])
def test_stacked_optimizer_matches_torch_optim(fields):
    fields = {k: v for k, v in fields.items() if v is not None}
    # Three runs with different learning rates in one stack: each must follow its own torch.optim twin.
    configs = [RunConfig(**{**fields, "lr": fields["lr"] * f}) for f in (1.0, 0.5, 2.0)]
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 50, generator=gen)
    flat, flat_grad = start.clone(), torch.zeros(3, 50)
    ours = StackedOptimizer(flat, flat_grad, configs)
    twins = [torch.nn.Parameter(start[k].clone()) for k in range(3)]
    oracles = [torch_optimizer(p, c) for p, c in zip(twins, configs)]
    for _ in range(25):
        grads = torch.randn(3, 50, generator=gen)
        flat_grad.copy_(grads)
        ours.step()
        for k, (p, opt) in enumerate(zip(twins, oracles)):
            p.grad = grads[k].clone()
            opt.step()
    for k in range(3):
        torch.testing.assert_close(flat[k], twins[k].detach(), rtol=1e-5, atol=1e-6)


def test_inactive_run_is_left_untouched():
    configs = [RunConfig(optimizer="adam", lr=0.1), RunConfig(optimizer="adam", lr=0.1, seed=1)]
    flat, grad = torch.ones(2, 4), torch.full((2, 4), 0.5)
    optimizer = StackedOptimizer(flat, grad, configs)
    optimizer.set_lr([0.1, 0.1], active=torch.tensor([1.0, 0.0]))
    optimizer.step()
    assert torch.all(flat[1] == 1.0)
    assert torch.all(flat[0] < 1.0)


@pytest.mark.parametrize("fields,scheduler", [
    (dict(schedule="cosine", lr=0.1, min_lr=0.001, epochs=12),
     lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.001)),
    (dict(schedule="step", lr=0.1, step_size=3, gamma=0.5, epochs=12),
     lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)),
    (dict(schedule="constant", lr=0.1, epochs=12),
     lambda opt: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)),
])
def test_schedules_match_torch_schedulers(fields, scheduler):
    config = RunConfig(**fields)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = scheduler(opt)
    for epoch in range(config.epochs):
        assert math.isclose(scheduled_lr(config, epoch), opt.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        sched.step()
