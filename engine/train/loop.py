"""The training loop: K runs that share tensor shapes train together; a single run is K = 1.

``train_stack`` trains one stack and reports each run through its own sink (engine/train/driver.py decides which
stacks train, where, and skips what the store already has).

Data lives on the device as tensors and a batch is an index gather (``X[idx]``): there is no DataLoader, no
per-batch collation and no host-device copy inside the loop. Divergence is tracked on the device too (no
synchronisation per step); the loop synchronises once per epoch to log.
"""
from __future__ import annotations

import io
import platform
import time
from typing import Any, Callable

import torch

from engine.config import RunConfig
from engine.faults import pause_point
from engine.models import StackedModel
from engine.objectives import metric_sums, per_run_loss
from engine.optim import StackedOptimizer, scheduled_lr
from engine.sinks import RunSink
from engine.stop import stop_of
from engine.tasks import TaskData, load_task_data
from engine.train.device import device_name, resolve_device

# Fields that may differ inside one stack: they change values, never shapes or the graph.
PER_RUN_FIELDS = frozenset({"seed", "lr", "weight_decay", "momentum", "schedule", "min_lr", "step_size", "gamma",
                            "grad_clip", "evaluate_test"})
# Evaluation runs in chunks of this many samples x runs: large enough that per-call overhead vanishes, small enough
# that a stack of convolutional runs stays within a few hundred MB of activations.
EVAL_CHUNK = 2048


def stack_key(config: RunConfig) -> tuple:
    """Configs with equal keys can train as one stack."""
    return tuple(sorted((k, str(v)) for k, v in config.to_dict().items() if k not in PER_RUN_FIELDS))


def _order_generator(seed: int) -> torch.Generator:
    # Separate from the initialisation stream so the data order does not depend on the model's size.
    return torch.Generator().manual_seed(seed + 0x5EED_0000)


@torch.inference_mode()
def evaluate(model: StackedModel, config: RunConfig, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss and task metrics of every run in the stack on one split (all K runs see the same samples)."""
    k, n = model.k, x.shape[0]
    chunk = max(1, EVAL_CHUNK // k)
    loss_sum = torch.zeros(k, device=x.device)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, n, chunk):
        xb = x[start:start + chunk].unsqueeze(0).expand(k, *x[start:start + chunk].shape)
        yb = y[start:start + chunk].unsqueeze(0).expand(k, *y[start:start + chunk].shape)
        outs = model(xb)
        loss_sum += per_run_loss(config, outs, yb) * xb.shape[1]
        for name, value in metric_sums(config, outs, yb).items():
            sums[name] = sums.get(name, 0) + value
    return {"loss": loss_sum / n, **{name: value / n for name, value in sums.items()}}


def _finite_or_none(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


def checkpoint_bytes(model: StackedModel, k: int) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.run_state(k), buffer)
    return buffer.getvalue()


def load_checkpoint(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def train_stack(configs: list[RunConfig], sinks: list[RunSink], device: str | torch.device = "auto",
                progress: Callable[[dict[str, Any]], None] | None = None,
                should_stop: Callable[[], bool] | None = None, data: TaskData | None = None) -> list[str]:
    """Train K configs of one stack together; every run reports to its own sink. Returns each run's status."""
    if len({stack_key(c) for c in configs}) != 1:
        raise ValueError("train_stack needs configs that differ only in " + ", ".join(sorted(PER_RUN_FIELDS)))
    device = resolve_device(device) if isinstance(device, str) else device
    k = len(configs)
    meta = {"device": device_name(device), "torch_version": torch.__version__, "hostname": platform.node(),
            "stack_size": k}
    # "pending" until its sink has started: a stop that lands while the stack's runs are being opened still
    # finishes every run that was opened.
    statuses = ["pending"] * k
    try:
        for i, (config, sink) in enumerate(zip(configs, sinks)):
            sink.start(config, meta)
            statuses[i] = "running"
        _train(configs, sinks, statuses, device, progress, should_stop, data)
    except KeyboardInterrupt as stop:
        _finish_open(sinks, statuses, *stop_of(stop))
        raise
    except Exception as exc:  # a crash of the stack fails its open runs with the message, then propagates
        _finish_open(sinks, statuses, "failed", f"{type(exc).__name__}: {exc}")
        raise
    return statuses


def _finish_open(sinks: list[RunSink], statuses: list[str], status: str, error: str) -> None:
    for i, sink in enumerate(sinks):
        if statuses[i] == "running":
            sink.finish(status, error=error)
            statuses[i] = status


def _train(configs, sinks, statuses, device, progress, should_stop, data) -> None:
    """The loop behind train_stack. Updates ``statuses`` in place as runs finish, so that an interruption finishes
    only the runs still open."""
    base, k = configs[0], len(configs)
    data = (data or load_task_data(base)).to(device)
    x, y = data.train.x, data.train.y
    n = x.shape[0]
    model = StackedModel(base, data.input_shape, data.heads, data.target_dim, [c.seed for c in configs], device)
    optimizer = StackedOptimizer(model.flat, model.flat_grad, configs)
    generators = [_order_generator(c.seed) for c in configs]
    clip = torch.tensor([c.grad_clip or float("inf") for c in configs], device=device)
    clipping = any(c.grad_clip for c in configs)
    active = torch.ones(k, dtype=torch.bool, device=device)
    diverged_step = torch.full((k,), -1, dtype=torch.long, device=device)
    # Per-step losses and gradient norms of the epoch, summed and checked for divergence once at its end: the step
    # itself does no bookkeeping. A run that diverges mid-epoch keeps stepping on NaNs until then, harmlessly: its
    # slice of every tensor is its own (bmm, grouped convolutions and the elementwise optimizer never mix runs).
    n_steps = -(-n // base.batch_size)
    trace_loss = torch.empty(n_steps, k, device=device)
    trace_norm = torch.empty(n_steps, k, device=device)
    batch_sizes = torch.full((n_steps, 1), float(base.batch_size), device=device)
    batch_sizes[-1] = n - base.batch_size * (n_steps - 1)
    step = 0
    started = time.perf_counter()
    pause_point("before-first-epoch", [c.run_id for c in configs])

    for epoch in range(base.epochs):
        epoch_start = time.perf_counter()
        lrs = [scheduled_lr(c, epoch) for c in configs]
        active_f = active.float()
        optimizer.set_lr(lrs, active_f)  # a diverged run gets lr 0 and a zero upstream gradient
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)  # (K, N)
        for i in range(n_steps):
            idx = order[:, i * base.batch_size:(i + 1) * base.batch_size]  # (K, b)
            xb, yb = x[idx], y[idx]  # (K, b, *input_shape), (K, b, ...)
            outs = model(xb)
            losses = per_run_loss(base, outs, yb)
            model.zero_grad()
            # d(sum of the active runs' losses): each run gets its own gradient. (A plain sum: backward(gradient=...)
            # makes torch import sympy on first use, 0.35 s per process.)
            (losses * active_f).sum().backward()
            grad = model.flat_grad
            grad_norm = grad.norm(dim=1)
            if clipping:  # clip_grad_norm_ per run: scale by max_norm / (norm + 1e-6) when that is below 1
                grad.mul_((clip / (grad_norm + 1e-6)).clamp(max=1.0).unsqueeze(1))
            optimizer.step()
            trace_loss[i] = losses.detach()
            trace_norm[i] = grad_norm

        # Divergence: the first step with a non-finite loss or gradient norm; weights that overflowed on the last
        # step count as that step.
        bad_steps = ~torch.isfinite(trace_loss + trace_norm)  # (S, K)
        bad_weights = ~torch.isfinite(model.flat).all(dim=1)
        first_bad = torch.where(bad_steps.any(0), bad_steps.float().argmax(0), n_steps - 1)
        newly = active & (bad_steps.any(0) | bad_weights)
        diverged_step = torch.where(newly, step + first_bad, diverged_step)
        active = active & ~newly
        step += n_steps
        loss_sum = (trace_loss * batch_sizes).sum(0)
        grad_norm_mean = trace_norm.mean(0)
        val = evaluate(model, base, data.val.x, data.val.y)
        # One synchronisation per epoch: everything to the host at once.
        columns = {"train_loss": loss_sum / n, "grad_norm": grad_norm_mean,
                   **{f"val_{m}": v for m, v in val.items()}}
        host = {name: value.tolist() for name, value in columns.items()}
        active_host, diverged_host = active.tolist(), diverged_step.tolist()
        epoch_time = time.perf_counter() - epoch_start
        for i, sink in enumerate(sinks):
            if statuses[i] != "running":
                continue
            if not active_host[i]:
                # The epoch in which the run diverged is not logged: its curve ends at the last finite epoch.
                statuses[i] = "diverged"
                sink.finish("diverged", summary={"diverged_epoch": epoch, "diverged_step": diverged_host[i],
                                                 "n_params": model.n_params,
                                                 "wall_time_s": time.perf_counter() - started})
                continue
            metrics = {name: _finite_or_none(values[i]) for name, values in host.items()}
            sink.log_epoch(epoch, {**metrics, "lr": lrs[i], "epoch_time_s": epoch_time})
        if progress is not None:
            progress({"epoch": epoch + 1, "epochs": base.epochs, "runs": k,
                      "active": sum(active_host), "run_ids": [c.run_id for c in configs]})
        if not any(active_host):
            return
        if should_stop is not None and should_stop():
            _finish_open(sinks, statuses, "cancelled", f"stopped after epoch {epoch}")
            return

    wall_time = time.perf_counter() - started
    test = None
    if any(c.evaluate_test for c in configs):
        test = {name: value.tolist() for name, value in
                evaluate(model, base, data.test.x, data.test.y).items()}
    for i, (config, sink) in enumerate(zip(configs, sinks)):
        if statuses[i] != "running":
            continue
        summary: dict[str, Any] = {"n_params": model.n_params, "wall_time_s": wall_time}
        if config.evaluate_test and test is not None:
            summary.update({f"test_{name}": _finite_or_none(values[i]) for name, values in test.items()})
        sink.finish("completed", summary=summary, checkpoint=checkpoint_bytes(model, i))
        statuses[i] = "completed"
