"""Models for K runs at once: every layer holds K runs' weights, stored as views of one flat (K, P) leaf tensor.

Why stacked: the runs of a sweep that differ only in seed or learning rate have the same tensor shapes, so one
batched forward and backward (``bmm``, grouped convolutions) trains all of them for the cost of a few runs. A single
run is simply K = 1: there is one code path, so "stacked" and "alone" cannot drift apart.

Why one flat tensor: the optimizer, gradient clipping, the gradient-norm metric and the finiteness checks are then
a handful of elementwise ops on a (K, P) tensor with per-run hyper-parameters as (K, 1) columns, instead of a Python
loop over layers and runs. Each layer's parameter is a leaf tensor that *views* ``flat``, and its ``.grad`` is
pre-set to the matching view of ``flat_grad``: autograd accumulates into those views in place (the contiguous
gradient-bucket trick of DistributedDataParallel), so the forward pass needs no slicing and the backward pass no
scatter into a flat gradient. Weights are laid out (in, out) so ``bmm`` needs no transpose.

Each run's slice is initialised from its own ``torch.Generator(seed)`` exactly as ``nn.Linear``/``nn.Conv2d`` do
(uniform in +-1/sqrt(fan_in) for weights and biases), so a run's initial weights do not depend on its neighbours.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import RunConfig
from engine.first_conv import Workspace, first_conv_pool


@dataclass(frozen=True)
class Slot:
    """One parameter tensor of one run: where it lives in the flat vector and its shape."""
    name: str
    shape: tuple[int, ...]
    offset: int
    fan_in: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# Our .grad views have the parameters' own strides, as autograd wants; for a size-1 dimension (a one-unit head) the
# stride it expects differs from ours although the memory order is the same. Accumulation is still in place.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

# Non-decreasing activations commute with max-pooling: max(f(a), f(b)) == f(max(a, b)).
CHANNELS_LAST = torch.channels_last

MONOTONIC = frozenset({"relu", "tanh", "sigmoid", "leaky_relu", "elu", "identity"})

# Images per step (runs x batch) from which the first layer and its max-pool run as one Function with kept buffers
# (engine/first_conv.py). Below it the Function's fixed per-call cost outweighs what it saves: measured with
# bench/train_throughput.py --mnist, one run at batch 10 was about 5% slower that way, batch 64 about 10% faster and
# a 12-run stack at batch 10 about 15% faster.
FUSED_FIRST_LAYER_MIN_IMAGES = 32


def _activation(name: str):
    return {
        "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "leaky_relu": F.leaky_relu, "elu": F.elu,
        "gelu": F.gelu, "silu": F.silu, "identity": lambda h: h,
        # The study tried softmax as a hidden activation: normalise over each sample's features.
        "softmax": lambda h: torch.softmax(h, dim=-1),
    }[name]


def output_sizes(config: RunConfig, heads: tuple[int, ...], target_dim: int) -> tuple[int, ...]:
    """Units of each output head: what the loss needs, not only what the task has."""
    if config.task == "regression":
        return (2 * target_dim,) if config.gaussian_head else (target_dim,)
    if config.task == "points":
        # One logit for MSE-on-sigmoid and BCE (as the study), two logits for cross-entropy.
        return (2,) if config.loss == "cross_entropy" else (1,)
    return heads


def _one_channel_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The first convolution of one-channel images, as one batched matrix product on the unfolded patches.

    x (K, B, 1, H, W), weight (K, out, 1, k, k), bias (K, out) -> (B, K*out, H, W) in channels-last order, as the
    grouped conv would give it. Why not conv2d: with one input channel oneDNN's kernels are at their least efficient
    (and a one-channel tensor cannot carry the channels-last order, so the output would need a copy into it), while
    the patch matrix (K, B*H*W, k*k) is small and its weight gradient is a single bmm (the images need no gradient).
    """
    k_runs, b, _, height, width = x.shape
    out, ks = weight.shape[1], weight.shape[-1]
    patches = F.unfold(x.reshape(k_runs * b, 1, height, width), ks, padding=ks // 2)  # (K*B, k*k, H*W)
    patches = patches.view(k_runs, b, ks * ks, height * width).transpose(2, 3).reshape(k_runs, b * height * width,
                                                                                       ks * ks)
    h = torch.baddbmm(bias.unsqueeze(1), patches, weight.reshape(k_runs, out, ks * ks).transpose(1, 2))
    # (K, B*H*W, out) -> (B, H, W, K*out) -> a (B, K*out, H, W) view with channels-last strides
    h = h.view(k_runs, b, height, width, out).permute(1, 2, 3, 0, 4).reshape(b, height, width, k_runs * out)
    return h.permute(0, 3, 1, 2)


class StackedModel:
    """K runs of one architecture. ``forward(x)`` maps (K, B, *input_shape) to a list of (K, B, units) per head."""

    def __init__(self, config: RunConfig, input_shape: tuple[int, ...], heads: tuple[int, ...], target_dim: int,
                 seeds: list[int], device: torch.device | str = "cpu"):
        self.config = config
        self.input_shape = tuple(input_shape)
        self.k = len(seeds)
        self.act = _activation(config.activation)
        self.out_sizes = output_sizes(config, heads, target_dim)
        self.slots: list[Slot] = []
        # Separate trunks: one feature extractor per head (the study's choice for colored MNIST). Shared: one.
        n_trunks = len(self.out_sizes) if (config.task == "colored_mnist" and not config.shared_trunk) else 1
        self.trunks = [self._build_trunk(f"trunk{t}") for t in range(n_trunks)]
        self.workspaces = [Workspace() for _ in self.trunks]  # the first layer's reusable buffers, per trunk
        self.heads = []
        for h, units in enumerate(self.out_sizes):
            features = self.trunks[h if n_trunks > 1 else 0]["features"]
            self.heads.append((self._slot(f"head{h}.weight", (features, units), features),
                               self._slot(f"head{h}.bias", (units,), features)))
        self.n_params = sum(s.size for s in self.slots)
        self.flat = self._init(seeds).to(device)       # (K, P) parameter values
        self.flat_grad = torch.zeros_like(self.flat)  # (K, P) their gradients
        self.params = {}
        for slot in self.slots:
            param = self._slice(self.flat, slot).detach().requires_grad_()
            param.grad = self._slice(self.flat_grad, slot)
            self.params[slot.name] = param

    # --- construction ----------------------------------------------------------------------------------------------
    def _slot(self, name: str, shape: tuple[int, ...], fan_in: int) -> Slot:
        offset = self.slots[-1].offset + self.slots[-1].size if self.slots else 0
        slot = Slot(name, tuple(shape), offset, fan_in)
        self.slots.append(slot)
        return slot

    def _build_trunk(self, prefix: str) -> dict:
        cfg = self.config
        if cfg.model == "mlp":
            width = math.prod(self.input_shape)
            layers = []
            for i, units in enumerate(cfg.hidden):
                layers.append((self._slot(f"{prefix}.fc{i}.weight", (width, units), width),
                               self._slot(f"{prefix}.fc{i}.bias", (units,), width)))
                width = units
            return {"kind": "mlp", "layers": layers, "features": width}
        c, h, w = self.input_shape
        layers = []
        for i, (out_c, k) in enumerate(zip(cfg.channels, cfg.kernel_sizes)):
            fan_in = c * k * k
            layers.append((self._slot(f"{prefix}.conv{i}.weight", (out_c, c, k, k), fan_in),
                           self._slot(f"{prefix}.conv{i}.bias", (out_c,), fan_in)))
            c = out_c
            if cfg.pool:
                h, w = h // 2, w // 2
        return {"kind": "cnn", "layers": layers, "features": c * h * w}

    def _init(self, seeds: list[int]) -> torch.Tensor:
        # Initialise on the CPU with a per-run generator: the same seed gives the same weights on any device.
        flat = torch.empty(self.k, self.n_params)
        for k, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(int(seed))
            for slot in self.slots:
                bound = 1.0 / math.sqrt(slot.fan_in)
                flat[k, slot.offset:slot.offset + slot.size].uniform_(-bound, bound, generator=gen)
        return flat

    def _slice(self, flat: torch.Tensor, slot: Slot) -> torch.Tensor:
        return flat[:, slot.offset:slot.offset + slot.size].view(self.k, *slot.shape)

    def view(self, slot: Slot) -> torch.Tensor:
        """The K runs' values of one parameter: (K, *shape), a leaf tensor sharing memory with ``flat``."""
        return self.params[slot.name]

    def zero_grad(self) -> None:
        # In place: the parameters' .grad tensors are views of flat_grad and must stay so.
        self.flat_grad.zero_()

    # --- forward ---------------------------------------------------------------------------------------------------
    def _run_trunk(self, trunk: dict, x: torch.Tensor, workspace: Workspace) -> torch.Tensor:
        k, b = x.shape[:2]
        if trunk["kind"] == "mlp":
            h = x.reshape(k, b, -1)  # (K, B, *input_shape) -> (K, B, D)
            for w, bias in trunk["layers"]:
                # (K, B, in) @ (K, in, out) + (K, 1, out) -> (K, B, out)
                h = self.act(torch.baddbmm(self.view(bias).unsqueeze(1), h, self.view(w)))
            return h
        # Runs become channel groups: (K, B, C, H, W) -> (B, K*C, H, W), one grouped conv for all K runs.
        # Channels-last throughout (same values, another memory order): on the CPU, oneDNN's convolution backward
        # and max-pooling are 1.5-5x faster in it at these small channel counts (bench/train_throughput.py).
        one_channel = x.shape[2] == 1  # then the first layer reads x itself (first_conv_pool, _one_channel_conv)
        pool_first = self.config.pool and self.config.activation in MONOTONIC
        if not one_channel:
            h = x.transpose(0, 1).reshape(b, -1, *x.shape[3:]).contiguous(memory_format=CHANNELS_LAST)
        for i, (w, bias) in enumerate(trunk["layers"]):
            weight = self.view(w)  # (K, out, in, k, k)
            if i == 0 and one_channel and pool_first and k * b >= FUSED_FIRST_LAYER_MIN_IMAGES:
                # convolution and max-pool in one Function (engine/first_conv.py); (K*B, out, H', W') -> (B, K*out,
                # H', W'), channels-last, then the activation on the pooled values.
                pooled = first_conv_pool(x, weight, self.view(bias), workspace)
                out, hp, wp = pooled.shape[1:]
                h = pooled.permute(0, 2, 3, 1).reshape(k, b, hp, wp, out).permute(1, 2, 3, 0, 4)
                h = self.act(h.reshape(b, hp, wp, k * out).permute(0, 3, 1, 2))
                continue
            if i == 0 and one_channel:
                h = _one_channel_conv(x, weight, self.view(bias))
            else:
                h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), self.view(bias).reshape(-1),
                             padding=weight.shape[-1] // 2, groups=k)
            if pool_first:
                # max-pool then activate: equal to activate-then-pool for a non-decreasing activation, on 4x fewer
                # values.
                h = self.act(F.max_pool2d(h, 2))
                continue
            if self.config.activation == "softmax":
                # Softmax over each run's own channels, never across runs: (B, K*C, H, W) -> (B, K, C, H, W).
                h = torch.softmax(h.view(b, k, -1, *h.shape[2:]), dim=2).view_as(h)
            else:
                h = self.act(h)
            if self.config.pool:
                h = F.max_pool2d(h, 2)
        # (B, K*C, H', W') -> (K, B, C*H'*W'), features in (C, H', W') order as nn.Flatten gives them (a copy out of
        # channels-last)
        return h.reshape(b, k, -1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self._run_trunk(t, x, ws) for t, ws in zip(self.trunks, self.workspaces)]
        outs = []
        for h, (w, bias) in enumerate(self.heads):
            f = features[h if len(features) > 1 else 0]
            outs.append(torch.baddbmm(self.view(bias).unsqueeze(1), f, self.view(w)))
        return outs

    __call__ = forward

    # --- one run's weights -----------------------------------------------------------------------------------------
    def run_state(self, k: int) -> dict:
        """A small, device-free checkpoint of run k: enough to rebuild it with ``from_state``."""
        return {"config": self.config.to_dict(), "input_shape": list(self.input_shape),
                "out_sizes": list(self.out_sizes), "flat": self.flat[k].cpu().clone()}

    @classmethod
    def from_state(cls, state: dict, heads: tuple[int, ...], target_dim: int) -> "StackedModel":
        config = RunConfig.from_dict(state["config"])
        model = cls(config, tuple(state["input_shape"]), heads, target_dim, seeds=[0])
        model.flat.copy_(state["flat"].unsqueeze(0))
        return model
