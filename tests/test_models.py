"""The stacked models against plain torch.nn modules built from the same weights (the oracle)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.config import RunConfig
from engine.models import FUSED_FIRST_LAYER_MIN_IMAGES, StackedModel

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "identity": nn.Identity,
       "softmax": lambda: nn.Softmax(dim=1)}


def reference_trunk(model: StackedModel, k: int, trunk: dict) -> nn.Sequential:
    """The run-k trunk as the study would write it: nn.Linear / nn.Conv2d, activation, MaxPool2d."""
    cfg, layers = model.config, []
    for w_slot, b_slot in trunk["layers"]:
        w, b = model.view(w_slot)[k].detach(), model.view(b_slot)[k].detach()
        if trunk["kind"] == "mlp":
            layer = nn.Linear(w.shape[0], w.shape[1])
            layer.weight.data, layer.bias.data = w.T.clone(), b.clone()
            layers += [layer, ACT[cfg.activation]()]
        else:
            layer = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            layer.weight.data, layer.bias.data = w.clone(), b.clone()
            layers += [layer, ACT[cfg.activation]()] + ([nn.MaxPool2d(2)] if cfg.pool else [])
    return nn.Sequential(nn.Flatten() if trunk["kind"] == "mlp" else nn.Identity(), *layers, nn.Flatten())


CASES = [
    (RunConfig(task="points", hidden=(75,), activation="tanh"), (2,), (2,), 0),
    (RunConfig(task="points", hidden=(), activation="relu"), (2,), (2,), 0),
    (RunConfig(task="mnist", hidden=(32, 16), activation="softmax"), (1, 28, 28), (10,), 0),
    (RunConfig(task="mnist", model="cnn", channels=(4, 6), kernel_sizes=(5, 3), activation="tanh"), (1, 28, 28),
     (10,), 0),
    (RunConfig(task="mnist", model="cnn", channels=(4,), kernel_sizes=(3,), activation="gelu", pool=False),
     (1, 28, 28), (10,), 0),
    (RunConfig(task="mnist", model="cnn", channels=(3, 3), kernel_sizes=(3, 3), activation="softmax"), (1, 28, 28),
     (10,), 0),
    (RunConfig(task="colored_mnist", model="cnn", channels=(4, 4), kernel_sizes=(3, 3)), (3, 28, 28), (10, 3), 0),
    (RunConfig(task="colored_mnist", model="cnn", channels=(4, 4), kernel_sizes=(3, 3), shared_trunk=True),
     (3, 28, 28), (10, 3), 0),
    (RunConfig(task="regression", hidden=(5, 5), activation="tanh", loss="gaussian_nll"), (10,), (), 1),
]


@pytest.mark.parametrize("config,input_shape,heads,target_dim", CASES,
                         ids=[f"{c.task}-{c.model}-{c.activation}" for c, *_ in CASES])
def test_stacked_forward_equals_plain_torch_modules(config, input_shape, heads, target_dim):
    model = StackedModel(config, input_shape, heads, target_dim, seeds=[0, 1, 2])
    x = torch.randn(3, 5, *input_shape, generator=torch.Generator().manual_seed(0))
    outs = model(x)
    for k in range(3):
        for h, (w_slot, b_slot) in enumerate(model.heads):
            trunk = model.trunks[h if len(model.trunks) > 1 else 0]
            head = nn.Linear(*model.view(w_slot)[k].shape)
            head.weight.data = model.view(w_slot)[k].detach().T.clone()
            head.bias.data = model.view(b_slot)[k].detach().clone()
            expected = head(reference_trunk(model, k, trunk)(x[k]))
            torch.testing.assert_close(outs[h][k], expected, rtol=1e-5, atol=1e-5)


def test_each_run_is_initialised_from_its_own_seed_only():
    config = RunConfig(task="points", hidden=(8,))
    alone = StackedModel(config, (2,), (2,), 0, seeds=[7]).flat[0]
    stacked = StackedModel(config, (2,), (2,), 0, seeds=[3, 7, 9]).flat[1]
    assert torch.equal(alone, stacked)


def test_init_follows_torch_default_bounds():
    model = StackedModel(RunConfig(task="points", hidden=(64,)), (2,), (2,), 0, seeds=[0])
    first = model.view(model.trunks[0]["layers"][0][0])  # fan_in 2: uniform in +-1/sqrt(2)
    assert first.abs().max() <= 2 ** -0.5 and first.abs().max() > 0.6
    head = model.view(model.heads[0][0])  # fan_in 64: +-1/8
    assert head.abs().max() <= 1 / 8


def test_gradients_land_in_the_flat_gradient_buffer():
    model = StackedModel(RunConfig(task="points", hidden=(4,)), (2,), (2,), 0, seeds=[0, 1])
    out = model(torch.randn(2, 3, 2))[0]
    model.zero_grad()
    out[0].sum().backward()  # run 0 only
    assert model.flat_grad[0].abs().sum() > 0
    assert torch.all(model.flat_grad[1] == 0)


def test_checkpoint_round_trip_rebuilds_the_same_function():
    model = StackedModel(RunConfig(task="mnist", model="cnn", channels=(4,), kernel_sizes=(3,)), (1, 28, 28), (10,),
                         0, seeds=[0, 5])
    again = StackedModel.from_state(model.run_state(1), heads=(10,), target_dim=0)
    x = torch.randn(1, 2, 1, 28, 28)
    torch.testing.assert_close(again(x)[0][0], model(x.expand(2, -1, -1, -1, -1))[0][1])


FUSED_CNN = RunConfig(task="mnist", model="cnn", channels=(4, 6), kernel_sizes=(3, 3), activation="tanh")


def test_first_layer_as_one_function_matches_conv_and_max_pool_with_gradients():
    """From FUSED_FIRST_LAYER_MIN_IMAGES images per step, the first convolution and its max-pool are one Function
    with kept buffers (engine/first_conv.py): outputs and the first layer's gradients are those of nn.Conv2d +
    nn.Tanh + nn.MaxPool2d, for each run of a stack, over two steps (the second reuses the buffers)."""
    model = StackedModel(FUSED_CNN, (1, 28, 28), (10,), 0, seeds=[0, 1])
    gen = torch.Generator().manual_seed(0)
    for step in range(2):
        x = torch.rand(2, 20, 1, 28, 28, generator=gen)
        assert 2 * 20 >= FUSED_FIRST_LAYER_MIN_IMAGES
        out = model(x)[0]
        upstream = torch.randn(out.shape, generator=gen)
        model.zero_grad()
        (out * upstream).sum().backward()
        for k in range(2):
            trunk = reference_trunk(model, k, model.trunks[0])
            w_slot, b_slot = model.heads[0]
            head = nn.Linear(*model.view(w_slot)[k].shape)
            head.weight.data = model.view(w_slot)[k].detach().T.clone()
            head.bias.data = model.view(b_slot)[k].detach().clone()
            expected = head(trunk(x[k]))
            torch.testing.assert_close(out[k], expected, rtol=1e-5, atol=1e-5)
            (expected * upstream[k]).sum().backward()
            conv = trunk[1]  # the first nn.Conv2d
            weight_slot, bias_slot = model.trunks[0]["layers"][0]
            # float32 sums of 15,680 products in another order: a few ulps of the gradient's scale
            torch.testing.assert_close(model.view(weight_slot).grad[k], conv.weight.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(model.view(bias_slot).grad[k], conv.bias.grad, rtol=1e-4, atol=1e-5)
    assert model.workspaces[0].kept_shapes == [(2, 20, 1, 28, 28)]


def test_first_layer_backward_after_a_newer_forward_is_refused():
    """The kept buffers belong to the latest forward pass: backpropagating an older one would use the wrong
    patches, so it raises instead of returning wrong gradients."""
    model = StackedModel(FUSED_CNN, (1, 28, 28), (10,), 0, seeds=[0])
    older = model(torch.rand(1, 40, 1, 28, 28))[0].sum()
    model(torch.rand(1, 40, 1, 28, 28))
    with pytest.raises(RuntimeError, match="newer forward pass"):
        older.backward()


def test_evaluation_keeps_no_first_layer_buffers():
    """Without autograd (evaluation in chunks of thousands of images) the buffers are allocated for the call and
    freed with it, and the values are the training path's."""
    model = StackedModel(FUSED_CNN, (1, 28, 28), (10,), 0, seeds=[0, 1])
    x = torch.rand(2, 64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        evaluated = model(x)[0]
    assert model.workspaces[0].kept_shapes == []
    torch.testing.assert_close(evaluated, model(x)[0].detach(), rtol=0, atol=0)
