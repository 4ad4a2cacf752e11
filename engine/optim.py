"""Optimizers and learning-rate schedules for K stacked runs.

The update rules follow ``torch.optim`` (SGD with momentum/Nesterov, Adam, AdamW, RMSprop, same defaults and the
same order of operations); ``tests/test_optim.py`` checks each against ``torch.optim`` as the oracle. They act on the
flat (K, P) parameter tensor of :class:`engine.models.StackedModel`; every per-run hyper-parameter is a (K, 1)
column, so each run keeps its own learning rate, momentum and weight decay exactly while all K update in one op.
Runs that have diverged are frozen through ``active``: their slice is left as it was.
"""
from __future__ import annotations

import math

import torch

from engine.config import RunConfig

# torch.optim defaults, kept here so the oracle test and the engine agree by construction.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8


def scheduled_lr(config: RunConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based), stepped once per epoch like torch's schedulers."""
    if config.schedule == "cosine":  # CosineAnnealingLR(T_max=epochs, eta_min=min_lr), closed form
        return config.min_lr + (config.lr - config.min_lr) * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    if config.schedule == "step":  # StepLR(step_size, gamma)
        return config.lr * config.gamma ** (epoch // config.step_size)
    return config.lr


class StackedOptimizer:
    """One optimizer kind (shared by the stack) with per-run hyper-parameters."""

    def __init__(self, param: torch.Tensor, grad: torch.Tensor, configs: list[RunConfig]):
        kinds = {(c.optimizer, bool(c.nesterov)) for c in configs}
        if len(kinds) != 1:
            raise ValueError(f"a stack needs one optimizer kind, got {sorted(kinds)}")
        self.kind, self.nesterov = kinds.pop()
        self.param, self.grad = param, grad
        column = lambda values: torch.tensor(values, dtype=param.dtype, device=param.device).unsqueeze(1)
        self.weight_decay = column([c.weight_decay for c in configs])
        self.momentum = column([c.momentum or 0.0 for c in configs])
        self.lr = column([c.lr for c in configs])
        self.decay = any(c.weight_decay for c in configs)  # skip the weight-decay ops when no run uses them
        self.step_count = 0
        self.state: dict[str, torch.Tensor] = {}

    def set_lr(self, lrs: list[float], active: torch.Tensor | None = None) -> None:
        """Learning rates of the next steps; ``active`` ((K,) of 1.0 / 0.0) zeroes those of diverged runs."""
        self.lr = torch.tensor(lrs, dtype=self.param.dtype, device=self.param.device).unsqueeze(1)
        if active is not None:
            self.lr = self.lr * active.unsqueeze(1)

    @torch.no_grad()
    def step(self) -> None:
        """Update every run from ``grad`` with its own learning rate (0 for a run that ``set_lr`` marked inactive:
        its state may still change, which only matters while it is active, and it is inactive once diverged)."""
        self.step_count += 1
        getattr(self, f"_{self.kind}")(self.param, self.grad, self.lr)

    def _buffer(self, name: str) -> torch.Tensor:
        if name not in self.state:
            self.state[name] = torch.zeros_like(self.param)
        return self.state[name]

    def _sgd(self, p, g, lr):
        if self.decay:
            g = g + self.weight_decay * p
        buf = self.state.get("momentum_buffer")
        # torch starts the buffer at the first gradient (no dampening), then buf = momentum * buf + grad.
        buf = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
        self.state["momentum_buffer"] = buf
        direction = g + self.momentum * buf if self.nesterov else buf
        p.sub_(lr * direction)

    def _adam(self, p, g, lr, decoupled: bool = False):
        beta1, beta2 = ADAM_BETAS
        if self.decay:
            if decoupled:  # AdamW: p <- p * (1 - lr * wd) before the Adam step
                p.mul_(1 - lr * self.weight_decay)
            else:
                g = g + self.weight_decay * p
        m, v = self._buffer("exp_avg"), self._buffer("exp_avg_sq")
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        t = self.step_count
        denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(ADAM_EPS)
        p.sub_((lr / (1 - beta1 ** t)) * m / denom)

    def _adamw(self, p, g, lr):
        self._adam(p, g, lr, decoupled=True)

    def _rmsprop(self, p, g, lr):
        if self.decay:
            g = g + self.weight_decay * p
        square_avg = self._buffer("square_avg")
        square_avg.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
        avg = square_avg.sqrt().add_(RMSPROP_EPS)
        if self.momentum.any():
            buf = self._buffer("momentum_buffer")
            buf.mul_(self.momentum).addcdiv_(g, avg)
            p.sub_(lr * buf)
        else:
            p.sub_(lr * g / avg)
