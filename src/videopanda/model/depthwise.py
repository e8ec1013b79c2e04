"""Depthwise 3-D convolution on channels-last tokens, with a backward that stays channels-last.

On CPU, oneDNN's depthwise ``Conv3d`` runs its forward ~3x faster channels-last than
channels-first, but its channels-last backward is ~5-10x slower than its channels-first one.
Here the forward and the input gradient (the same convolution of the output gradient with the
kernel flipped, stride 1, "same" padding) run channels-last, and only the weight gradient runs
channels-first, on copies of the input and output gradient.

Shape legend: C chunks, T frames, H x W grid, d channels (innermost in memory), k kernel size.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor


class _DepthwiseConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, video: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """video (C, d, T, H, W) channels-last, weight (d, 1, k, k, k) odd k, bias (d,) -> (C, d, T, H, W)."""
        # Under autocast, compute in its dtype as nn.Conv3d would, and keep those copies for the backward, which
        # runs outside autocast: its gradients are cast back to each input's own dtype (e.g. float32 weights).
        ctx.input_dtypes = (video.dtype, weight.dtype, bias.dtype)
        dtype = _compute_dtype(video)
        video, weight, bias = video.to(dtype), weight.to(dtype), bias.to(dtype)
        padding = [size // 2 for size in weight.shape[2:]]
        ctx.save_for_backward(video, weight)
        ctx.padding = padding
        return F.conv3d(video, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        video, weight = ctx.saved_tensors
        groups, padding = weight.shape[0], ctx.padding
        grad = grad.to(video.dtype).contiguous(memory_format=torch.channels_last_3d)  # no copy in the usual case
        grad_video = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_video = F.conv3d(grad, weight.flip(2, 3, 4), padding=padding, groups=groups)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad.contiguous(), video.contiguous(), weight, None, [1, 1, 1], padding, [1, 1, 1], False,
                [0, 0, 0], groups, [False, True, False])[1]
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3, 4))
        video_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        return (None if grad_video is None else grad_video.to(video_dtype),
                None if grad_weight is None else grad_weight.to(weight_dtype),
                None if grad_bias is None else grad_bias.to(bias_dtype))


def _compute_dtype(video: Tensor) -> torch.dtype:
    """The dtype autocast runs a convolution in on ``video``'s device; ``video``'s own outside autocast, or for
    float64, which autocast leaves alone."""
    device = video.device.type
    if torch.is_autocast_enabled(device) and video.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return video.dtype


def depthwise_conv3d(video: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Depthwise ``Conv3d`` (stride 1, "same" padding) of a channels-last (C, d, T, H, W) view; same shape out."""
    return cast(Tensor, _DepthwiseConv3d.apply(video, weight, bias))
