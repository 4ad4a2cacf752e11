"""The training loop: every task learns, runs are reproducible, divergence is caught, the store is a cache."""
from __future__ import annotations

import pytest
import torch

from engine.config import RunConfig
from engine.sinks import MemorySink
from engine.train import load_checkpoint, resolve_device, run_configs, train_stack


def train(config: RunConfig) -> MemorySink:
    sink = MemorySink()
    train_stack([config], [sink], device="cpu")
    return sink


# (config, headline metric, chance level, margin the last epoch must beat chance by)
LEARNING = [
    (RunConfig(task="points", dataset="circles", hidden=(32, 32), activation="relu", epochs=6), "val_accuracy",
     0.5, 0.35),
    (RunConfig(task="points", dataset="xor", hidden=(32,), activation="tanh", loss="bce", epochs=6),
     "val_accuracy", 0.5, 0.3),
    (RunConfig(task="mnist", model="cnn", channels=(8, 8), kernel_sizes=(3, 3), optimizer="sgd", lr=0.05,
               batch_size=32, epochs=2), "val_accuracy", 0.1, 0.6),
    (RunConfig(task="mnist", hidden=(), loss="mse", batch_size=32, epochs=2), "val_accuracy", 0.1, 0.6),
    (RunConfig(task="colored_mnist", model="cnn", channels=(8, 8), kernel_sizes=(3, 3), lr=0.003, batch_size=32,
               epochs=2), "val_color_accuracy", 1 / 3, 0.6),
]


@pytest.mark.parametrize("config,metric,chance,margin", LEARNING,
                         ids=[f"{c.task}-{c.dataset}-{c.model}-{c.loss}" for c, *_ in LEARNING])
def test_loss_falls_and_accuracy_beats_chance(config, metric, chance, margin):
    sink = train(config)
    assert sink.status == "completed"
    losses = sink.metric("train_loss")
    assert len(losses) == config.epochs
    assert losses[-1] < losses[0]
    assert sink.metric(metric)[-1] > chance + margin


def test_colored_mnist_reports_both_heads_and_both_right():
    sink = train(LEARNING[4][0])
    last = sink.epochs[-1][1]
    assert last["val_digit_accuracy"] > 0.3  # digits learn more slowly than colours
    # "both right" can never beat either head alone
    assert last["val_accuracy"] <= min(last["val_digit_accuracy"], last["val_color_accuracy"]) + 1e-9


def test_regression_mse_falls_well_below_the_variance():
    sink = train(RunConfig(task="regression", hidden=(16, 16), activation="tanh", epochs=8, lr=0.003))
    mse = sink.metric("val_mse")
    # Targets are standardised: predicting the mean scores ~1.0; diabetes features explain about half of it.
    assert mse[-1] < mse[0] and mse[-1] < 0.7


def test_gaussian_nll_learns_the_variance_and_goes_negative():
    sink = train(RunConfig(task="regression", dataset="hetero1d", hidden=(32, 32), activation="tanh",
                           loss="gaussian_nll", lr=0.003, epochs=15))
    last = sink.epochs[-1][1]
    assert last["val_nll"] < 0
    # A calibrated Gaussian puts ~68% within 1 std and ~95% within 2.
    assert 0.55 < last["val_within_1std"] < 0.85 and 0.88 < last["val_within_2std"] <= 1.0


def test_same_config_gives_bit_identical_numbers_on_cpu():
    config = RunConfig(task="points", dataset="moons", hidden=(16, 16), epochs=3, optimizer="rmsprop", lr=0.01,
                       evaluate_test=True)
    a, b = train(config), train(config)
    numbers = lambda sink: [{k: v for k, v in m.items() if k != "epoch_time_s"} for _, m in sink.epochs]
    assert a.epochs and numbers(a) == numbers(b)  # exact float equality; only the wall time may differ
    for key in ("test_loss", "test_accuracy"):
        assert a.summary[key] == b.summary[key]
    assert torch.equal(load_checkpoint(a.checkpoint)["flat"], load_checkpoint(b.checkpoint)["flat"])


def test_different_seed_gives_different_numbers():
    config = RunConfig(task="points", hidden=(16,), epochs=2)
    assert train(config).metric("train_loss") != train(config.replace(seed=1)).metric("train_loss")


def test_huge_learning_rate_diverges_and_keeps_the_curve():
    # SGD at lr 50 on raw points with MSE still trains for a while; on regression it explodes at once.
    sink = train(RunConfig(task="regression", hidden=(8,), activation="identity", optimizer="sgd", lr=50.0,
                           epochs=5))
    assert sink.status == "diverged"
    assert sink.summary["diverged_epoch"] == len(sink.epochs)  # every logged epoch is finite, then it stops
    assert sink.summary["diverged_step"] >= 0
    assert sink.checkpoint is None


def test_divergence_after_some_epochs_keeps_the_finite_ones():
    # SGD on a linear model of standardised diabetes is stable at lr 0.1; at 0.4 the error grows a little each step
    # and overflows only after a couple of epochs, so the run has a finite curve before it diverges.
    assert train(RunConfig(task="regression", hidden=(), optimizer="sgd", lr=0.1, epochs=3)).status == "completed"
    sink = train(RunConfig(task="regression", hidden=(), optimizer="sgd", lr=0.4, epochs=30))
    assert sink.status == "diverged"
    assert sink.summary["diverged_epoch"] == len(sink.epochs) >= 1
    assert all(value is not None for _, m in sink.epochs for value in m.values())
    steps_per_epoch = -(-309 // 10)  # 70% of 442 samples, batch 10
    assert sink.summary["diverged_step"] // steps_per_epoch == sink.summary["diverged_epoch"]


def test_unnormalised_regression_blows_up_where_normalised_trains():
    # The study's finding: "Without that pre-processing we have an exploding gradient due to the high values."
    base = RunConfig(task="regression", hidden=(5, 5, 5), activation="identity", optimizer="sgd", lr=0.01,
                     epochs=10)
    raw = train(base.replace(normalize=False))
    assert raw.status == "diverged"
    scaled = train(base)
    assert scaled.status == "completed"
    assert scaled.metric("val_mse")[-1] < 1.0


def test_test_split_is_only_evaluated_when_asked():
    config = RunConfig(task="points", hidden=(8,), epochs=1)
    assert not any(k.startswith("test_") for k in train(config).summary)
    asked = train(config.replace(evaluate_test=True)).summary
    assert 0.0 <= asked["test_accuracy"] <= 1.0 and asked["test_loss"] > 0


def test_grad_clip_bounds_the_update():
    # With clipping at 1e-3 the weights can move at most lr * 1e-3 * steps away from their start.
    config = RunConfig(task="points", hidden=(8,), optimizer="sgd", lr=0.1, grad_clip=1e-3, epochs=1)
    sink = train(config)
    start = train(config.replace(lr=1e-12)).checkpoint
    moved = (load_checkpoint(sink.checkpoint)["flat"] - load_checkpoint(start)["flat"]).norm().item()
    steps = -(-700 // config.batch_size)
    assert moved <= 0.1 * 1e-3 * steps + 1e-6
    assert moved > 0


def test_device_auto_falls_back_to_cpu_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: auto picks it (covered by the gpu-marked test)")
    assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize("config", [
    RunConfig(task="points", hidden=(4,), epochs=1),
    RunConfig(task="colored_mnist", hidden=(4,), epochs=1, batch_size=256),
    RunConfig(task="regression", dataset="hetero1d", loss="gaussian_nll", hidden=(4,), epochs=1, evaluate_test=True),
], ids=["points", "colored_mnist", "regression-gaussian-test"])
def test_the_loop_logs_exactly_the_metrics_engine_metrics_lists(config):
    from engine.metrics import logged_metrics
    sink = train(config)
    logged = set(sink.epochs[0][1]) | {k for k in sink.summary if k.startswith("test_")}
    assert logged == logged_metrics(config)


def test_run_records_device_and_torch_version():
    sink = train(RunConfig(task="points", hidden=(4,), epochs=1))
    assert sink.meta["device"] == "cpu" and sink.meta["torch_version"] == torch.__version__


def test_completed_config_is_a_cache_hit(tmp_path):
    from engine.store import RunStore
    store = RunStore(tmp_path / "runs")
    config = RunConfig(task="points", hidden=(8,), epochs=2)
    first = run_configs([config], store, device="cpu")[0]
    assert first.status == "completed" and not first.cached
    before = store.get(config.run_id)
    second = run_configs([config, config], store, device="cpu")
    assert [o.cached for o in second] == [True]  # duplicates collapse; the cached run trains nothing
    after = store.get(config.run_id)
    assert after.final == before.final and after.n_epochs == 2


def test_diverged_config_is_cached_too(tmp_path):
    from engine.store import RunStore
    store = RunStore(tmp_path / "runs")
    config = RunConfig(task="regression", hidden=(), optimizer="sgd", lr=5.0, epochs=2)
    assert run_configs([config], store, device="cpu")[0].status == "diverged"
    again = run_configs([config], store, device="cpu")[0]
    assert again.cached and again.status == "diverged"


@pytest.mark.gpu
def test_cuda_runs_keep_data_and_weights_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; this machine has none")
    from engine.tasks import load_task_data
    from engine.models import StackedModel
    config = RunConfig(task="mnist", model="cnn", channels=(8, 8), kernel_sizes=(3, 3), epochs=1, batch_size=64)
    data = load_task_data(config).to("cuda")
    assert data.train.x.is_cuda and data.train.y.is_cuda
    model = StackedModel(config, data.input_shape, data.heads, data.target_dim, [0], "cuda")
    assert model.flat.is_cuda and all(p.is_cuda for p in model.params.values())
    sink = MemorySink()
    train_stack([config], [sink], device="auto")
    assert sink.status == "completed" and sink.meta["device"].startswith("cuda")


def test_an_interrupt_cancels_the_open_runs_and_carries_every_outcome(tmp_path):
    from engine.store import RunStore
    from engine.train import TrainingInterrupted
    store = RunStore(tmp_path / "runs", durable=False)
    short = RunConfig(task="points", hidden=(8,), epochs=1)
    long = RunConfig(task="points", hidden=(8,), activation="tanh", epochs=3)

    def progress(event):
        if event.get("epochs") == 3 and event["epoch"] == 1:
            raise KeyboardInterrupt  # what SIGINT does between two epochs

    with pytest.raises(TrainingInterrupted) as stop:
        run_configs([short, long], store, device="cpu", progress=progress)
    assert {o.run_id: o.status for o in stop.value.outcomes} == {short.run_id: "completed", long.run_id: "cancelled"}
    assert store.get(long.run_id).status == "cancelled" and store.get(long.run_id).n_epochs == 1


def test_keep_going_fails_a_crashing_stack_and_trains_the_next(tmp_path, monkeypatch):
    from engine.store import RunStore
    from engine.tasks import DataNotAvailableError
    from engine.train import InProcess
    monkeypatch.setenv("ABLATION_LAB_DATA", str(tmp_path / "no-mnist-here"))
    store = RunStore(tmp_path / "runs", durable=False)
    missing = RunConfig(task="mnist", dataset="full", hidden=(4,), epochs=1)
    points = RunConfig(task="points", hidden=(4,), epochs=1)
    outcomes = run_configs([missing, points], store, device="cpu", executor=InProcess(keep_going=True))
    assert [o.status for o in outcomes] == ["failed", "completed"]
    assert "full MNIST not found" in outcomes[0].error and store.get(missing.run_id).status == "failed"
    with pytest.raises(DataNotAvailableError):  # without keep_going (a job) the error propagates
        run_configs([missing], store, device="cpu")
