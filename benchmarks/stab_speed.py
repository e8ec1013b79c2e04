"""Speed of our STAB + projector against the release's form of the same computation.

The release form, written here from the release's description (spec section 2):
per video, its chunks as one batch through patch embedding, LSTE and GSTRA
(explicit q/k/v products of the packed in-projection, every token projected to
keys and values); then per frame: crop by ``nonzero``, LSD via ``avg_pool2d`` +
``unfold`` with keys/values of every window token, FSRA likewise, split tokens,
fusion, and the projector on that frame's sequence. Both forms share the
weights; the outputs check prints (and asserts) their largest difference.

Release size by default (d=1024, D=4096, 448x448 frames, 8-frame videos of mixed
aspect ratios), batches of 1 and 4 videos; forward (no grad) and forward+backward.
Each repeat times the release form and ours back to back; medians are printed.

    python benchmarks/stab_speed.py                       # CPU, float32, 1 repeat (~1 min of compute, longer under load)
    python benchmarks/stab_speed.py --device cuda --dtype bf16 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaConfig

from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.projector import build_projector
from videopanda.model.stab import STAB

# (height, width, real frames) of the benchmark videos, cycled: square, 16:9, 3:4 portrait, 21:9 with padding frames.
VIDEO_SHAPES = ((480, 480, 8), (360, 640, 8), (640, 480, 8), (270, 630, 6))
FRAMES_PER_VIDEO = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Largest |release - ours| over the projected tokens accepted as "the same function", per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.5, torch.float16: 0.1}
Form = Callable[[STAB, nn.Module, Tensor, Tensor], Tensor]  # (stab, projector, pixels, chunk_lengths) -> (N, D)


def release_gstra(gstra: nn.Module, query: Tensor, tokens: Tensor) -> Tensor:
    """The release's GSTRA block, sequence-first: query (1, C, d), tokens (M, C, d) -> (1, C, d)."""
    attn, dim = gstra.attn, query.shape[-1]
    x, y = gstra.ln_1(query), gstra.ln_3(tokens)
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = x @ weight[:dim].T + bias[:dim]  # (1, C, d)
    k = y @ weight[dim:-dim].T + bias[dim:-dim]  # (M, C, d): every token's key
    v = y @ weight[-dim:].T + bias[-dim:]  # (M, C, d): and value
    q, k, v = (t.view(t.shape[0], t.shape[1], attn.num_heads, attn.head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
    out = ((q @ k.transpose(-2, -1) / attn.head_dim**0.5).softmax(-1) @ v).permute(2, 0, 1, 3).flatten(2)
    query = query + attn.out_proj(out)
    return query + gstra.mlp(gstra.ln_2(query))


def release_lsd(lsd: nn.Module, crop: Tensor, stride: int) -> Tensor:
    """LSD via avg_pool2d + unfold: crop (1, d, H, W) -> (1, h*w, d)."""
    dim, heads = crop.shape[1], lsd.num_heads
    reduced = F.avg_pool2d(crop, stride, stride)  # (1, d, h, w)
    h, w = reduced.shape[-2:]
    reduced = reduced.flatten(2).transpose(1, 2)  # (1, h*w, d)
    q = lsd.q(reduced).reshape(1, h * w, heads, -1).permute(0, 2, 1, 3).unsqueeze(-2)  # (1, H, hw, 1, e)
    windows = crop.unfold(2, stride, stride).unfold(3, stride, stride).contiguous().view(1, dim, h * w, stride**2)
    kv = lsd.kv(windows.permute(0, 2, 3, 1))  # (1, hw, s*s, 2d): keys/values of every window token
    kv = kv.reshape(1, h * w, stride**2, 2, heads, -1).permute(3, 0, 4, 1, 2, 5)  # (2, 1, H, hw, s*s, e)
    attention = (q * lsd.scale * kv[0]).sum(-1).softmax(-1)  # (1, H, hw, s*s)
    pooled = (attention.unsqueeze(-1) * kv[1]).sum(-2).transpose(1, 2).reshape(1, h * w, dim)
    return reduced + lsd.proj(pooled)


def release_fsra(fsra: nn.Module, class_embedding: Tensor, tokens: Tensor) -> Tensor:
    """FSRA: class_embedding (1, 1, d) over tokens (1, n, d) -> (1, 1, d)."""
    heads, n = fsra.num_heads, tokens.shape[1]
    q = fsra.q(class_embedding).reshape(1, 1, heads, -1).transpose(1, 2)  # (1, H, 1, e)
    kv = fsra.kv(tokens).reshape(1, n, 2, heads, -1).permute(2, 0, 3, 1, 4)  # (2, 1, H, n, e)
    attention = (q * fsra.scale * kv[0]).sum(-1).softmax(-1)  # (1, H, n)
    return class_embedding + fsra.proj((attention.unsqueeze(-1) * kv[1]).sum(-2).reshape(1, 1, -1))


def release_video(stab: STAB, projector: nn.Module, chunks: Tensor) -> list[Tensor]:
    """One video as the release runs it: chunks (C, T, 4, S, S) -> per frame (1 + h*(w+1), D)."""
    num_chunks, length = chunks.shape[:2]
    frames = chunks.flatten(0, 1)  # (C*T, 4, S, S)
    patches = stab.patch_embedding(frames[:, :3])  # (C*T, d, Hp, Wp)
    masks = F.avg_pool2d(frames[:, 3:], stab.patch_size)  # (C*T, 1, Hp, Wp)
    dim, grid_h, grid_w = patches.shape[1:]
    x = patches.view(num_chunks, length, dim, grid_h, grid_w).transpose(1, 2).contiguous()  # (C, d, T, Hp, Wp)
    x = stab.lste(x)
    x = x.permute(2, 3, 4, 0, 1).contiguous().view(-1, num_chunks, dim)  # (T*Hp*Wp, C, d)
    chunk_context = release_gstra(stab.gstra, stab.temporal_cls_token.repeat(1, num_chunks, 1), x)[0]  # (C, d)
    x = x.view(length, grid_h, grid_w, num_chunks, dim).permute(3, 0, 4, 1, 2).flatten(0, 1)  # (C*T, d, Hp, Wp)
    tokens = x + patches  # dense connection
    alpha, s, limit = torch.sigmoid(stab.balance), stab.lsd_stride, stab.max_crop_patches
    outputs = []
    for i in range(tokens.shape[0]):
        if masks[i, 0].sum() == 0:
            crop = tokens[i, :, :limit, :limit]
        else:
            valid = torch.nonzero(masks[i, 0])
            (top, left), (bottom, right) = valid[0].tolist(), valid[-1].tolist()
            crop = tokens[i, :, top : bottom + 1, left : right + 1]
        h, w = crop.shape[1] // s, crop.shape[2] // s
        grid = release_lsd(stab.lsd, crop[None], s)  # (1, h*w, d)
        context = release_fsra(stab.fsra, stab.class_embedding[None, None], grid)[0]  # (1, d)
        rows = torch.cat([grid[0].transpose(0, 1).reshape(dim, h, w), stab.split_embedding[:, None, None].repeat(1, h, 1)], -1)
        context = stab.fusion_head((1 - alpha) * chunk_context[i // length][None] + alpha * context)
        outputs.append(projector(torch.cat([context, rows.flatten(1).transpose(0, 1)])))
    return outputs


def release_form(stab: STAB, projector: nn.Module, pixels: Tensor, chunk_lengths: Tensor) -> Tensor:
    """The release's loop over videos of FRAMES_PER_VIDEO frames in equal chunks: (sum N_f, D)."""
    length = int(chunk_lengths[0])
    videos = pixels.split(FRAMES_PER_VIDEO)  # V x (8, 4, S, S)
    return torch.cat([t for video in videos for t in release_video(stab, projector, video.unflatten(0, (-1, length)))])


def our_form(stab: STAB, projector: nn.Module, pixels: Tensor, chunk_lengths: Tensor) -> Tensor:
    return projector(stab(pixels, chunk_lengths).tokens)


def make_batch(num_videos: int, config: VideoPandaConfig, seed: int = 0) -> tuple[Tensor, Tensor]:
    """pixel_values (8*V, 4, S, S) of videos with mixed aspect ratios, chunk_lengths (2*V,)."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(num_videos):
        height, width, real = VIDEO_SHAPES[i % len(VIDEO_SHAPES)]
        frames = rng.integers(0, 256, (real, height, width, 3), dtype=np.uint8)
        videos.append(preprocess_frames(frames, image_size=config.image_size, num_frames=config.num_frames,
                                        with_teacher=False).pixel_values)
    chunks = num_videos * config.num_frames // config.chunk_length
    return torch.cat(videos), torch.full((chunks,), config.chunk_length, dtype=torch.long)


def timed_step(form: Form, stab: STAB, projector: nn.Module, pixels: Tensor, chunks: Tensor, backward: bool) -> float:
    """Wall time in ms of one forward (no grad) or forward+backward of ``form``."""
    if pixels.device.type == "cuda":
        torch.cuda.synchronize(pixels.device)
    begin = time.perf_counter()
    if backward:
        form(stab, projector, pixels, chunks).float().square().mean().backward()
    else:
        with torch.no_grad():
            form(stab, projector, pixels, chunks)
    if pixels.device.type == "cuda":
        torch.cuda.synchronize(pixels.device)
    elapsed = (time.perf_counter() - begin) * 1000
    for p in [*stab.parameters(), *projector.parameters()]:
        p.grad = None
    return elapsed


def compare(stab: STAB, projector: nn.Module, pixels: Tensor, chunks: Tensor, backward: bool, repeats: int,
            warmup: int) -> tuple[float, float]:
    """Median ms (release, ours): each repeat runs both back to back, so load drift hits both alike."""
    times: dict[str, list[float]] = {"release": [], "ours": []}
    for step in range(warmup + repeats):
        for name, form in (("release", release_form), ("ours", our_form)):
            elapsed = timed_step(form, stab, projector, pixels, chunks, backward)
            if step >= warmup:
                times[name].append(elapsed)
    return statistics.median(times["release"]), statistics.median(times["ours"])


def build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[VideoPandaConfig, STAB, nn.Module]:
    torch.manual_seed(0)
    text = LlamaConfig(hidden_size=args.llm_hidden_size, num_hidden_layers=1, num_attention_heads=8, vocab_size=32)
    config = VideoPandaConfig(text_config=text, stab_hidden_size=args.stab_hidden_size, image_size=args.image_size,
                              teacher_image_size=args.image_size // 2, num_frames=FRAMES_PER_VIDEO)
    stab = STAB(config).eval().to(device, dtype)
    projector = build_projector(config.stab_hidden_size, config.llm_hidden_size).to(device, dtype)
    with torch.no_grad():  # wake the zero-initialised branches so both forms do real work
        for p in stab.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return config, stab, projector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per form and measurement (median)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 3 on GPU, 0 on CPU")
    parser.add_argument("--videos", type=int, nargs="+", default=[1, 4], help="batch sizes in videos")
    parser.add_argument("--stab-hidden-size", type=int, default=1024)
    parser.add_argument("--llm-hidden-size", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=448)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 0)
    config, stab, projector = build(args, device, dtype)
    print(f"STAB + projector, d={config.stab_hidden_size} D={config.llm_hidden_size} {config.image_size}px "
          f"{config.num_frames} frames/video, {device} {dtype}, median of {args.repeats} after {warmup} warm-up, "
          f"{torch.get_num_threads()} threads")
    print(f"{'videos':>6} {'pass':>16} {'release ms/video':>17} {'ours ms/video':>14} {'release/ours':>13}")
    for num_videos in args.videos:
        pixels, chunks = make_batch(num_videos, config)
        pixels, chunks = pixels.to(device, dtype), chunks.to(device)
        with torch.no_grad():  # also the one-time kernel/allocator set-up, outside both forms' timings
            difference = (our_form(stab, projector, pixels, chunks) - release_form(stab, projector, pixels, chunks)).abs().max()
        for backward in (False, True):
            release_ms, our_ms = compare(stab, projector, pixels, chunks, backward, args.repeats, warmup)
            name = "forward+backward" if backward else "forward"
            print(f"{num_videos:>6} {name:>16} {release_ms / num_videos:>17.1f} {our_ms / num_videos:>14.1f} "
                  f"{release_ms / our_ms:>12.2f}x", flush=True)
        print(f"{'':>6} max |release - ours| over the projected tokens: {difference.item():.2e}")
        assert difference <= TOLERANCE[dtype], f"the two forms disagree by {difference.item():.2e}"


if __name__ == "__main__":
    main()
