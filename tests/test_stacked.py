"""Stacked training gives the same results as training each run alone (same seed, same data order): every logged
metric of every epoch, the test metrics, and the final weights (from the checkpoints).

Both sides train in float64. A stack and a single run compute the same sums in different orders (a batched GEMM
over K runs, a grouped convolution, and the processor's own kernel choice reassociate them), so their results may
differ by a few units in the last place per operation, and training amplifies such differences from step to step;
by how much depends on the optimiser and the machine, not on our code. In float32 (unit roundoff 6e-8) that
amplification reached 5e-5 on one machine's kernels after two epochs of momentum SGD, which is why a float32
tolerance tuned on one machine fails on another. In float64 (unit roundoff 1.1e-16) the same amplification leaves
the differences below 1e-12 (at most 3.3e-16 measured here, in the weights and every logged metric), so a tolerance of 1e-9 has a margin of more than a
thousand for other processors, while any real mistake (a run reading another run's slice, a wrong per-run
learning rate or momentum) moves results by far more than 1e-3."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import RunConfig
from engine.sinks import MemorySink
from engine.tasks import Split, load_task_data
from engine.train import load_checkpoint, stack_key, train_stack

# float64: reassociation differences (a few ulps of 1.1e-16 per op) compounded over at most a few hundred steps of
# the stable trainings below stay under 1e-12; 1e-9 leaves a margin of 1000x for other kernels and processors.
RTOL, ATOL = 1e-9, 1e-9


@pytest.fixture(autouse=True)
def float64():
    """Models and optimiser state in float64 (torch's default dtype decides the parameters' dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small(config: RunConfig, n_train: int, n_val: int = 200):
    data = load_task_data(config)
    cut = lambda s, n: Split(s.x[:n].double(), s.y[:n].double() if s.y.is_floating_point() else s.y[:n])
    return dataclasses.replace(data, train=cut(data.train, n_train), val=cut(data.val, n_val),
                               test=cut(data.test, n_val))


def run(configs, data):
    sinks = [MemorySink() for _ in configs]
    statuses = train_stack(configs, sinks, device="cpu", data=data)
    return sinks, statuses


def assert_same(stacked: MemorySink, alone: MemorySink, what: str):
    assert stacked.status == alone.status == "completed", what
    assert len(stacked.epochs) == len(alone.epochs) > 0, what
    for (e1, m1), (e2, m2) in zip(stacked.epochs, alone.epochs):
        assert e1 == e2
        assert set(m1) == set(m2)
        for name in m1:
            if name == "epoch_time_s":
                continue
            assert m1[name] == pytest.approx(m2[name], rel=RTOL, abs=ATOL), f"{what}: epoch {e1} {name}"
    for name, value in alone.summary.items():
        if name.startswith("test_"):
            assert stacked.summary[name] == pytest.approx(value, rel=RTOL, abs=ATOL), f"{what}: {name}"
    w_stacked = load_checkpoint(stacked.checkpoint)["flat"]
    w_alone = load_checkpoint(alone.checkpoint)["flat"]
    assert w_stacked.shape == w_alone.shape
    assert torch.allclose(w_stacked, w_alone, rtol=RTOL, atol=ATOL), \
        f"{what}: max weight difference {(w_stacked - w_alone).abs().max().item():.3g}"


def check_stack(configs, data):
    assert len({stack_key(c) for c in configs}) == 1
    stacked, statuses = run(configs, data)
    assert statuses == ["completed"] * len(configs)
    for config, sink in zip(configs, stacked):
        (alone,), _ = run([config], data)
        assert_same(sink, alone, f"seed={config.seed} lr={config.lr} {config.optimizer}")
    return stacked


MLP = RunConfig(task="points", dataset="moons", hidden=(16, 12), activation="tanh", batch_size=16, epochs=3,
                evaluate_test=True)


# Stable hyper-parameters on purpose: where training is chaotic (e.g. RMSprop with lr 0.01 and momentum 0.9 here),
# float32 rounding differences, which do exist (a batched GEMM over K runs may round differently from a single one),
# grow to visible size within an epoch, exactly as between two machines or thread counts.
@pytest.mark.parametrize("optimizer,lrs,extra", [
    ("sgd", (0.003, 0.01, 0.03), [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.5, weight_decay=1e-3)]),
    ("adam", (0.003, 0.01, 0.03), [dict(), dict(weight_decay=1e-3), dict(grad_clip=0.5)]),
    ("adamw", (0.003, 0.01, 0.03), [dict(weight_decay=0.01), dict(weight_decay=0.1, schedule="cosine"), dict()]),
    ("rmsprop", (0.001, 0.003, 0.01), [dict(momentum=0.9), dict(momentum=0.5),
                                       dict(schedule="step", step_size=1, gamma=0.5)]),
])
def test_mlp_stack_matches_runs_alone(optimizer, lrs, extra):
    configs = [MLP.replace(optimizer=optimizer, lr=lr, seed=seed, **kw)
               for seed, (lr, kw) in enumerate(zip(lrs, extra))]
    stacked = check_stack(configs, small(MLP, 400))
    # The stack really held different runs: different seeds and learning rates end at different weights.
    w = [load_checkpoint(s.checkpoint)["flat"] for s in stacked]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])


def test_sgd_nesterov_stack_matches_runs_alone():
    configs = [MLP.replace(optimizer="sgd", nesterov=True, momentum=m, lr=lr, seed=s)
               for s, (m, lr) in enumerate([(0.9, 0.05), (0.5, 0.1)])]
    check_stack(configs, small(MLP, 300))


def test_same_seed_different_lr_in_one_stack():
    configs = [MLP.replace(optimizer="adam", lr=lr, seed=7) for lr in (0.001, 0.01, 0.05)]
    check_stack(configs, small(MLP, 300))


def test_gaussian_regression_stack_matches_runs_alone():
    base = RunConfig(task="regression", dataset="hetero1d", hidden=(16,), activation="tanh", loss="gaussian_nll",
                     optimizer="adam", batch_size=20, epochs=3, evaluate_test=True)
    configs = [base.replace(lr=lr, seed=s) for s, lr in enumerate((0.003, 0.01))]
    check_stack(configs, small(base, 300, 100))


# Batch 32: the stack and each run alone take the first layer as one Function (engine/first_conv.py); batch 16: only
# the stack of two does (32 images per step), the runs alone take conv2d + max_pool2d.
@pytest.mark.parametrize("batch_size", [32, 16])
def test_cnn_grouped_convolution_stack_matches_runs_alone(batch_size):
    base = RunConfig(task="mnist", model="cnn", channels=(4, 6), kernel_sizes=(3, 3), activation="relu",
                     optimizer="sgd", batch_size=batch_size, epochs=2)
    configs = [base.replace(lr=lr, momentum=m, seed=s) for s, (lr, m) in enumerate([(0.05, 0.0), (0.02, 0.9)])]
    check_stack(configs, small(base, 256, 128))


def test_two_head_colored_mnist_stack_matches_runs_alone():
    base = RunConfig(task="colored_mnist", model="cnn", channels=(4,), kernel_sizes=(3,), activation="tanh",
                     optimizer="adam", batch_size=32, epochs=2)
    configs = [base.replace(lr=lr, seed=s) for s, lr in enumerate((0.003, 0.01))]
    check_stack(configs, small(base, 256, 128))
