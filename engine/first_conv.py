"""The first convolution of one-channel images and the max-pool after it, as one autograd Function.

Why: on the CPU, at the batch sizes of the reference study (10 and 64), the first layer of the exercise-2 CNN cost
more than the two 20-channel layers after it (bench/train_throughput.py, torch profiler). Its output is the largest
tensor of the network (B x 20 x 28 x 28), and every step allocated several tensors of that size (the unfolded patches,
the output, the bias broadcast, the max-pool's zero-filled input gradient, a layout copy), each one fresh memory the
kernel had to fault in. Here the patch matrix, the output and its gradient live in buffers kept from step to step,
and the whole layer is three ``bmm``-sized operations:

- forward: patches (K, k*k + 1, B*H*W) with a row of ones, so that ``bmm`` with the weights stacked on the bias
  gives the convolution in channels-last order; then ``max_pool2d_with_indices`` (so ties resolve exactly as
  ``nn.MaxPool2d`` resolves them);
- backward: the pooled gradient scattered to the argmax positions of a zeroed buffer, and one ``bmm`` of the patches
  with it, which is the weight *and* the bias gradient. The images need no gradient.

The buffers are overwritten by the next forward pass, so a backward pass must follow its own forward pass (as it
does in a training step); a backward pass for an older forward pass raises instead of returning wrong gradients.
Without autograd (evaluation) nothing is kept: the buffers are allocated for the call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Workspace:
    """Buffers of the first layer for each input shape seen (the full batch, and the epoch's last, smaller one)."""

    def __init__(self):
        self._by_shape: dict[tuple, dict[str, torch.Tensor]] = {}
        self.generation = 0

    @property
    def kept_shapes(self) -> list[tuple]:
        """The input shapes whose buffers are kept for the next steps."""
        return [key[0] for key in self._by_shape]

    def buffers(self, x: torch.Tensor, out: int, ks: int, keep: bool) -> dict[str, torch.Tensor]:
        key = (tuple(x.shape), out, ks, x.dtype, x.device)
        if keep and key in self._by_shape:
            return self._by_shape[key]
        k_runs, b, _, height, width = x.shape
        pad, taps = ks // 2, ks * ks
        buffers = {
            # Zero border once: only the interior is rewritten each step.
            "padded": x.new_zeros(k_runs * b, height + 2 * pad, width + 2 * pad),
            # (K, k*k + 1, B*H*W): one row per tap, so that filling a tap copies whole image rows
            "patches": x.new_empty(k_runs, taps + 1, b * height * width),
            "weights": x.new_empty(k_runs, taps + 1, out),
            "output": x.new_empty(k_runs, b * height * width, out),
        }
        buffers["patches"][:, taps] = 1.0  # the bias row
        if keep:
            buffers["grad_output"] = x.new_empty(k_runs, b * height * width, out)
            if len(self._by_shape) >= 4:  # a stack sees two batch sizes per epoch; evaluation keeps nothing
                self._by_shape.clear()
            self._by_shape[key] = buffers
        return buffers


class FirstConvPool(torch.autograd.Function):
    """x (K, B, 1, H, W), weight (K, out, 1, k, k), bias (K, out) -> max_pool2d(conv2d(x), 2) of each run, as
    (K*B, out, H//2, W//2) in channels-last order (batch index = run * B + sample)."""

    @staticmethod
    def forward(ctx, x, weight, bias, workspace: Workspace, training: bool):
        k_runs, b, _, height, width = x.shape
        out, ks = weight.shape[1], weight.shape[-1]
        pad, taps = ks // 2, ks * ks
        buf = workspace.buffers(x, out, ks, keep=training)
        padded = buf["padded"]
        padded[:, pad:pad + height, pad:pad + width].copy_(x.reshape(k_runs * b, height, width))
        hp, wp = padded.shape[1:]
        # patches[k, dy, dx, n, y, x] = padded[k * B + n, y + dy, x + dx]: a strided view of the padded images,
        # copied once, image row by image row.
        windows = padded.as_strided((k_runs, ks, ks, b, height, width), (b * hp * wp, wp, 1, hp * wp, wp, 1))
        buf["patches"][:, :taps].view(k_runs, ks, ks, b, height, width).copy_(windows)
        weights = buf["weights"]
        weights[:, :taps].copy_(weight.reshape(k_runs, out, taps).transpose(1, 2))
        weights[:, taps].copy_(bias)
        torch.bmm(buf["patches"].transpose(1, 2), weights, out=buf["output"])
        conv = buf["output"].view(k_runs * b, height, width, out).permute(0, 3, 1, 2)  # channels-last strides
        pooled, argmax = F.max_pool2d_with_indices(conv, 2)
        if training:
            workspace.generation += 1
            ctx.workspace, ctx.generation, ctx.buffers = workspace, workspace.generation, buf
            ctx.shape = (k_runs, b, height, width, out, ks)
            ctx.save_for_backward(argmax)
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled):
        if ctx.workspace.generation != ctx.generation:
            raise RuntimeError("FirstConvPool: a newer forward pass reused this layer's buffers before this "
                               "backward pass; call backward once after each forward pass")
        (argmax,) = ctx.saved_tensors
        k_runs, b, height, width, out, ks = ctx.shape
        buf = ctx.buffers
        grad_conv = buf["grad_output"]
        grad_conv.zero_()
        # argmax holds each window's position as y * W + x within its (sample, channel) plane; in channels-last
        # order a plane's positions are dim 1 of (K*B, H*W, out).
        positions = argmax.permute(0, 2, 3, 1).reshape(k_runs * b, -1, out)
        grad_conv.view(k_runs * b, height * width, out).scatter_(
            1, positions, grad_pooled.permute(0, 2, 3, 1).reshape(k_runs * b, -1, out))
        grad_weights = torch.bmm(buf["patches"], grad_conv)  # (K, k*k + 1, out)
        taps = ks * ks
        grad_weight = grad_weights[:, :taps].transpose(1, 2).reshape(k_runs, out, 1, ks, ks)
        return None, grad_weight, grad_weights[:, taps], None, None


def first_conv_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, workspace: Workspace) -> torch.Tensor:
    """max_pool2d(conv2d(x, weight, bias, padding=k//2), 2) for K stacked runs of one-channel images: (K*B, out, H/2,
    W/2), channels-last."""
    # Keep the buffers (and count generations) only when a backward pass will come: grad mode is off inside forward.
    training = torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad)
    return FirstConvPool.apply(x, weight, bias, workspace, training)
