"""The Spatio-Temporal Alignment Block (STAB): raw frames -> LLM-width-ready tokens.

Shape legend
    F  frames in the batch (all videos and images, in order)
    C  chunks (``chunk_length`` consecutive frames of one video, or one image)
    T  frames per chunk
    d  STAB width
    Hp, Wp   patch grid of the square canvas (S / patch_size)
    gh, gw   LSD grid of the canvas (Hp / s, Wp / s)
    h, w     a frame's LSD grid after cropping to its valid patches
    N        LSD cells of all frames' crops, sum_f h_f * w_f

Every frame is a square ``(4, S, S)`` canvas (RGB + validity mask), so patch
embedding, LSTE and GSTRA run as whole tensors (grouped by chunk length), kept
channels-last (d innermost) so that no layout copies come between them (the depthwise
convolutions' weight gradients alone run channels-first: ``depthwise.py``). The
per-frame crops are ragged: their s x s windows are gathered into one packed
``(N, s*s, d)`` tensor by index, FSRA attends per frame over its LSD tokens
padded to the longest frame (masked), and the output is assembled by one
gather. No Python loop over frames or chunks. GSTRA, LSD and FSRA never
project every token to keys and values (``stab_attention.py``: exact).
Frame f's output block is ``[context, row_0 (w tokens), split, row_1, split, ...]``.

Under activation checkpointing (``model.activation_checkpointing_enable()``, training's
``gradient_checkpointing``) the GSTRA, LSD and FSRA attention blocks are recomputed in the backward
pass instead of keeping their activations, like the LLM's decoder layers. The LSTE keeps its own:
its BatchNorm would count a recomputed batch twice in its running statistics.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.depthwise import depthwise_conv3d
from videopanda.model.stab_attention import GlobalSpatioTemporalAttention, SegmentAttention, WindowAttention


class STABOutput(NamedTuple):
    """A NamedTuple, not a dataclass: DeepSpeed ZeRO-3's module hooks find tensors only in tuples, lists, dicts.

    On request, per frame (F first; padding and frames of one-frame chunks are zeros), with H heads, P = Hp*Wp
    patches and L = max h*w LSD cells: ``hidden_states`` the patch embeddings (F, P, d) and the outputs of the
    three attention blocks: GSTRA's chunk context (F, 1, d), LSD's tokens (F, L, d), FSRA's frame context
    (F, 1, d); ``attentions`` those blocks' weights: GSTRA's chunk query over this frame's patches (F, H, 1, P;
    a chunk's frames share one softmax), each LSD cell over its s*s window (F, H, L, s*s), FSRA's query over
    the frame's cells (F, H, 1, L).
    """

    tokens: Tensor  # (sum_f N_f, d), frames in order
    grid_hw: Tensor  # (F, 2) long: each frame's LSD grid after cropping
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None

    @property
    def tokens_per_frame(self) -> Tensor:
        """(F,) long: ``1 + h * (w + 1)`` (context + rows with their split token)."""
        return tokens_per_frame(self.grid_hw)


def tokens_per_frame(grid_hw: Tensor) -> Tensor:
    """(F, 2) LSD grids -> (F,) long token counts ``1 + h * (w + 1)``."""
    return 1 + grid_hw[:, 0] * (grid_hw[:, 1] + 1)


def crop_boxes(patch_mask: Tensor, max_crop_patches: int) -> tuple[Tensor, Tensor]:
    """Crop rule of the release: ``(top_left (F, 2), size (F, 2))`` in patches.

    The box runs from the first to the last non-zero cell of the patch mask in
    row-major order; an all-zero mask (a padding frame) keeps its top-left
    ``max_crop_patches`` x ``max_crop_patches`` patches (clipped to the grid).
    """
    if patch_mask.dim() != 3:
        raise ValueError(f"patch_mask must be (F, Hp, Wp), got {tuple(patch_mask.shape)}")
    _, grid_h, grid_w = patch_mask.shape
    valid = patch_mask.flatten(1) > 0  # (F, Hp*Wp)
    cells = torch.arange(grid_h * grid_w, device=patch_mask.device)
    first = torch.where(valid, cells, grid_h * grid_w).amin(1)
    last = torch.where(valid, cells, -1).amax(1)
    top_left = torch.stack([first // grid_w, first % grid_w], 1)
    size = torch.stack([last // grid_w, last % grid_w], 1) - top_left + 1
    empty = ~valid.any(1)
    default = torch.tensor([min(max_crop_patches, grid_h), min(max_crop_patches, grid_w)], device=patch_mask.device)
    top_left = torch.where(empty[:, None], 0, top_left)
    size = torch.where(empty[:, None], default, size)
    return top_left, size


def frame_grid_hw(patch_mask: Tensor, lsd_stride: int, max_crop_patches: int) -> Tensor:
    """(F, 2) long: each frame's LSD grid ``(h, w)`` after the crop rule.

    ``patch_mask`` is ``(F, Hp, Wp)``: the mask channel average-pooled by the patch size.
    A frame's token count is ``1 + h * (w + 1)``; the processor counts placeholders with this.
    """
    _, size = crop_boxes(patch_mask, max_crop_patches)
    return size // lsd_stride


def _bias(conv: nn.Conv3d) -> Tensor:
    """A convolution's bias (every convolution here has one)."""
    if conv.bias is None:
        raise ValueError(f"{conv} has no bias")
    return conv.bias


def _running_stats(norm: nn.BatchNorm3d) -> tuple[Tensor, Tensor]:
    """(running mean, running variance) of a BatchNorm that tracks them."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"{norm} keeps no running statistics")
    return norm.running_mean, norm.running_var


class LocalTemporalMHRA(nn.Module):
    """LMHRA: BN -> 1x1x1 down -> depthwise temporal conv (3,1,1) -> 1x1x1 up (zero-init).

    The weights are the release's ``Sequential`` of 3-D layers (checkpoint names); the forward runs them on
    channels-last tokens, where the 1x1x1 convolutions are plain matrix products over d and the temporal
    depthwise convolution runs channels-last forward and backward (``depthwise.py``; ~4x faster forward and
    2x faster forward+backward than three shifted multiply-adds). In eval mode the BatchNorm is an affine
    map folded into the down projection.
    """

    def __init__(self, dim: int, reduction: float = 1.5) -> None:
        super().__init__()
        inner = int(dim / reduction)
        norm = nn.BatchNorm3d(dim)
        down = nn.Conv3d(dim, inner, kernel_size=1)
        temporal = nn.Conv3d(inner, inner, kernel_size=(3, 1, 1), padding=(1, 0, 0), groups=inner)
        up = nn.Conv3d(inner, dim, kernel_size=1)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(_bias(up))
        self.pos_embed = nn.Sequential(norm, down, temporal, up)

    def forward(self, x: Tensor) -> Tensor:
        """x (C, T, Hp, Wp, d) channels-last -> ``x + LMHRA(x)``, same shape."""
        norm, down, temporal, up = cast(tuple[nn.BatchNorm3d, nn.Conv3d, nn.Conv3d, nn.Conv3d], tuple(self.pos_embed))
        down_weight, down_bias = down.weight.flatten(1), _bias(down)  # (k, d), (k,)
        if self.training:  # batch statistics (and their running update): the module itself, on a (C, d, T, Hp, Wp) view
            z = F.linear(norm(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1), down_weight, down_bias)
        else:  # running statistics: BN(x) = x * scale + shift, so W BN(x) + b = (W * scale) x + (W shift + b)
            running_mean, running_var = _running_stats(norm)
            scale = norm.weight * torch.rsqrt(running_var + norm.eps)
            shift = norm.bias - running_mean * scale
            z = F.linear(x, down_weight * scale, torch.addmv(down_bias, down_weight, shift))  # (C, T, Hp, Wp, k)
        z = depthwise_conv3d(z.permute(0, 4, 1, 2, 3), temporal.weight, _bias(temporal)).permute(0, 2, 3, 4, 1)
        out = torch.addmm(x.flatten(0, 3), z.flatten(0, 3), up.weight.flatten(1).t())  # x + W_up z, (C*T*Hp*Wp, d)
        return (out + _bias(up)).view_as(x)


def tensors_as_buffers(module: nn.Module) -> nn.Module:
    """``module`` with every parameter turned into a persistent buffer of the same name (same state-dict keys),
    and every tensor zero until a checkpoint fills it."""
    for owner in module.modules():
        for name, param in list(owner.named_parameters(recurse=False)):
            delattr(owner, name)
            owner.register_buffer(name, torch.zeros_like(param, requires_grad=False))
    for buffer in module.buffers():
        buffer.detach().zero_()
    return module


class LocalSpatioTemporalEncoder(nn.Module):
    """LSTE: ``x + LMHRA(x)``, then ``x + DPE(x)`` (depthwise 3x3x3 conv) over a chunk's frames."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lmhra = LocalTemporalMHRA(dim)
        # The release's `lmhra2`: held so its checkpoints load and convert back, never called, so its tensors are
        # buffers (saved under the same names), not parameters that would never get a gradient.
        self.unused_lmhra = tensors_as_buffers(LocalTemporalMHRA(dim))
        self.dpe = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
        nn.init.zeros_(_bias(self.dpe))

    def forward(self, x: Tensor) -> Tensor:
        """x (C, T, Hp, Wp, d) contiguous (channels-last) -> same."""
        x = self.lmhra(x)  # includes the residual
        dpe = depthwise_conv3d(x.permute(0, 4, 1, 2, 3), self.dpe.weight, _bias(self.dpe))  # (C, d, T, Hp, Wp)
        return x + dpe.permute(0, 2, 3, 4, 1)


class STAB(nn.Module):
    """Spatio-Temporal Alignment Block (spec section 2).

    Submodules: ``patch_embedding``; ``lste`` + ``temporal_cls_token`` + ``gstra``
    (chunk-level context of videos); ``lsd`` (s x s downsampling); ``fsra`` with
    ``class_embedding`` (frame-level context); ``split_embedding`` (row ends);
    ``balance`` + ``fusion_head`` (context fusion). ``convert.py`` maps these to
    the release's names.
    """

    def __init__(self, config: VideoPandaConfig) -> None:
        super().__init__()
        dim = config.stab_hidden_size
        self.patch_size = config.patch_size
        self.lsd_stride = config.lsd_stride
        self.max_crop_patches = config.max_crop_patches
        self.patch_embedding = nn.Conv2d(3, dim, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        self.lste = LocalSpatioTemporalEncoder(dim)
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.gstra = GlobalSpatioTemporalAttention(dim, config.stab_num_heads, config.stab_dropout)
        self.lsd = WindowAttention(dim, config.stab_num_heads)
        self.fsra = SegmentAttention(dim, config.stab_num_heads)
        scale = dim**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(dim))
        self.split_embedding = nn.Parameter(scale * torch.randn(dim))
        self.balance = nn.Parameter(torch.zeros(dim))
        self.fusion_head = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(config.stab_dropout), nn.Linear(dim, dim))

    def forward(self, pixel_values: Tensor, chunk_lengths: Tensor, output_hidden_states: bool = False,
                output_attentions: bool = False) -> STABOutput:
        """pixel_values (F, 4, S, S), chunk_lengths (C,) with sum F -> STABOutput."""
        chunk_lengths = chunk_lengths.to(pixel_values.device)
        self._check_inputs(pixel_values, chunk_lengths)
        patches = self._embed_patches(pixel_values[:, :3])  # (F, Hp, Wp, d)
        patch_mask = F.avg_pool2d(pixel_values[:, 3:4], self.patch_size)[:, 0]  # (F, Hp, Wp)
        tokens, video_context, chunk_weights = self._temporal(patches, chunk_lengths)  # (F, Hp, Wp, d), (F, d)
        top_left, size = crop_boxes(patch_mask, self.max_crop_patches)
        grid_hw = size // self.lsd_stride  # (F, 2)
        if not grid_hw.all():
            empty = (grid_hw == 0).any(1).nonzero().flatten().tolist()
            raise ValueError(
                f"frames {empty} have a valid region smaller than one {self.lsd_stride}x{self.lsd_stride} LSD window"
            )
        cells = self._lsd_cells(grid_hw, patch_mask.shape[1] // self.lsd_stride, patch_mask.shape[2] // self.lsd_stride)
        windows = self._crop_windows(tokens, top_left, cells)  # (N, s*s, d): every frame's cropped windows
        grid_tokens, window_weights = self.lsd(windows.mean(1), windows)  # (N, d) frame-major, row-major; (N, H, s*s)
        per_frame, real = self._pad_per_frame(grid_tokens, cells, grid_hw)  # (F, L, d), (F, L)
        frame_context, frame_weights = self.fsra(self.class_embedding, per_frame, real)  # (F, d), (F, H, L)
        context = self._fuse(frame_context, video_context, chunk_lengths)  # (F, d)
        tokens = self._assemble(context, grid_tokens, cells, grid_hw)
        hidden_states = attentions = None
        if output_hidden_states:
            hidden_states = (patches.flatten(1, 2), video_context[:, None], per_frame, frame_context[:, None])
        if output_attentions:
            window_weights = self._pad_per_frame(window_weights, cells, grid_hw)[0].transpose(1, 2)  # (F, H, L, s*s)
            attentions = (chunk_weights[:, :, None], window_weights, frame_weights[:, :, None])
        return STABOutput(tokens, grid_hw, hidden_states, attentions)

    def _check_inputs(self, pixel_values: Tensor, chunk_lengths: Tensor) -> None:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 4:
            raise ValueError(f"pixel_values must be (F, 4, S, S), got {tuple(pixel_values.shape)}")
        if pixel_values.shape[-1] % (self.patch_size * self.lsd_stride) or pixel_values.shape[-2] % (
            self.patch_size * self.lsd_stride
        ):
            raise ValueError(
                f"frame size {tuple(pixel_values.shape[-2:])} must be a multiple of patch_size*lsd_stride"
                f" = {self.patch_size * self.lsd_stride}"
            )
        if chunk_lengths.dim() != 1 or int(chunk_lengths.sum()) != pixel_values.shape[0] or (chunk_lengths < 1).any():
            raise ValueError(
                f"chunk_lengths {chunk_lengths.tolist()} must be positive and sum to the number of frames "
                f"{pixel_values.shape[0]}"
            )

    def _embed_patches(self, rgb: Tensor) -> Tensor:
        """(F, 3, S, S) -> (F, Hp, Wp, d) channels-last: the stride-p convolution as one product over p x p patches.

        Channels-last, LSTE then runs without layout copies and the crop gathers whole d-rows.
        """
        frames, channels, height, width = rgb.shape
        p = self.patch_size
        patches = rgb.reshape(frames, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        return F.linear(patches.flatten(3), self.patch_embedding.weight.flatten(1))  # (F, Hp, Wp, 3*p*p) -> d

    def _temporal(self, patches: Tensor, chunk_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """LSTE + GSTRA per group of equal-length chunks, and the dense connection.

        ``patches`` (F, Hp, Wp, d). Returns the dense tokens (F, Hp, Wp, d): LSTE
        output + patch embeddings for video frames, the patch embeddings alone for
        one-frame chunks; each frame's chunk-level context (F, d); and GSTRA's
        weights on each frame's patches (F, H, Hp*Wp) (both zeros, unused, for one-frame chunks).
        """
        frames_total, grid_h, grid_w, _ = patches.shape
        tokens = patches
        video_context = patches.new_zeros(frames_total, patches.shape[-1])
        chunk_weights = patches.new_zeros(frames_total, self.gstra.attn.num_heads, grid_h * grid_w)
        starts = torch.cumsum(chunk_lengths, 0) - chunk_lengths
        for length in chunk_lengths.unique().tolist():  # distinct chunk lengths (4, and 1 for images)
            if length == 1:
                continue
            frames = (starts[chunk_lengths == length][:, None] + torch.arange(length, device=patches.device)).flatten()
            every_frame = len(frames) == len(patches)  # all chunks this long (the usual video batch): no gather/scatter
            grouped = (patches if every_frame else patches[frames]).unflatten(0, (-1, length))  # (C, T, Hp, Wp, d)
            x = self.lste(grouped.contiguous())  # (C, T, Hp, Wp, d)
            query = self.temporal_cls_token.expand(x.shape[0], -1, -1)
            chunk_context, weights = self.gstra(query, x.flatten(1, 3))  # (C, 1, d), (C, H, T*Hp*Wp)
            chunk_context = chunk_context[:, 0].repeat_interleave(length, 0)  # (C*T, d)
            weights = weights.unflatten(2, (length, -1)).transpose(1, 2).flatten(0, 1)  # (C*T, H, Hp*Wp)
            if every_frame:  # dense connection
                tokens, video_context, chunk_weights = tokens + x.flatten(0, 1), chunk_context, weights
            else:
                tokens = tokens.index_add(0, frames, x.flatten(0, 1))
                video_context = video_context.index_copy(0, frames, chunk_context)
                chunk_weights = chunk_weights.index_copy(0, frames, weights)
        return tokens, video_context, chunk_weights

    @staticmethod
    def _lsd_cells(grid_hw: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(N, 3) long ``(frame, row, col)`` of every LSD cell inside each frame's crop, frame-major, row-major."""
        rows = torch.arange(grid_h, device=grid_hw.device)[None, :, None] < grid_hw[:, 0, None, None]
        cols = torch.arange(grid_w, device=grid_hw.device)[None, None, :] < grid_hw[:, 1, None, None]
        return (rows & cols).nonzero()  # (F, gh, gw) mask -> (N, 3)

    def _crop_windows(self, tokens: Tensor, top_left: Tensor, cells: Tensor) -> Tensor:
        """Gather the s x s patch window of every LSD cell: (F, Hp, Wp, d) -> (N, s*s, d)."""
        s = self.lsd_stride
        frame, row, col = cells.unbind(1)
        offset = torch.arange(s, device=tokens.device)
        rows = (top_left[frame, 0] + s * row)[:, None, None] + offset[None, :, None]  # (N, s, 1)
        cols = (top_left[frame, 1] + s * col)[:, None, None] + offset[None, None, :]  # (N, 1, s)
        return tokens[frame[:, None, None], rows, cols].flatten(1, 2)  # (N, s, s, d) -> (N, s*s, d)

    @staticmethod
    def _pad_per_frame(per_cell: Tensor, cells: Tensor, grid_hw: Tensor) -> tuple[Tensor, Tensor]:
        """(N, ...) per LSD cell -> (F, L, ...) zero-padded per frame (L = max h*w) and its (F, L) bool mask of
        real cells."""
        frame, row, col = cells.unbind(1)
        position = row * grid_hw[frame, 1] + col  # (N,) place in its frame, row-major
        length = int((grid_hw[:, 0] * grid_hw[:, 1]).max())
        padded = per_cell.new_zeros(len(grid_hw), length, *per_cell.shape[1:])
        mask = torch.zeros(len(grid_hw), length, dtype=torch.bool, device=per_cell.device)
        mask[frame, position] = True
        return padded.index_put((frame, position), per_cell), mask

    def _fuse(self, frame_context: Tensor, video_context: Tensor, chunk_lengths: Tensor) -> Tensor:
        """Mix chunk and frame contexts for video frames; images keep their frame context."""
        alpha = torch.sigmoid(self.balance)
        fused = self.fusion_head((1 - alpha) * video_context + alpha * frame_context)
        in_video = torch.repeat_interleave(chunk_lengths > 1, chunk_lengths)  # (F,)
        return torch.where(in_video[:, None], fused, frame_context)

    def _assemble(self, context: Tensor, grid_tokens: Tensor, cells: Tensor, grid_hw: Tensor) -> Tensor:
        """[context, rows with a split token after each] per frame -> (sum_f N_f, d).

        One gather from ``[grid_tokens; context; split]`` with an index built from the cells.
        """
        num_tokens, num_frames = grid_tokens.shape[0], context.shape[0]
        counts = tokens_per_frame(grid_hw)  # (F,)
        start = torch.cumsum(counts, 0) - counts  # (F,) each frame's first output position
        frame, row, col = cells.unbind(1)
        source = torch.full((int(counts.sum()),), num_tokens + num_frames, device=context.device)  # split by default
        source[start] = num_tokens + torch.arange(num_frames, device=context.device)
        source[start[frame] + 1 + row * (grid_hw[frame, 1] + 1) + col] = torch.arange(num_tokens, device=context.device)
        return torch.cat([grid_tokens, context, self.split_embedding[None]])[source]
