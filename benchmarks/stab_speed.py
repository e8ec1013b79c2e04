"""Speed of the vectorised STAB + projector against a per-frame-loop form of the same computation.

Release size by default (d=1024, D=4096, 448x448 frames, 8-frame videos of mixed
aspect ratios), batches of 1 and 4 videos; forward (no grad) and forward+backward.
Prints milliseconds per video for both forms, their ratio, and the largest
difference between their outputs (they compute the same function).

    python benchmarks/stab_speed.py                       # CPU, float32, 1 repeat
    python benchmarks/stab_speed.py --device cuda --dtype bf16 --repeats 20
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaConfig

from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.projector import build_projector
from videopanda.model.stab import STAB, crop_boxes

# (height, width, real frames) of the benchmark videos, cycled: square, 16:9, 3:4 portrait, 21:9 with padding frames.
VIDEO_SHAPES = ((480, 480, 8), (360, 640, 8), (640, 480, 8), (270, 630, 6))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Form = Callable[[STAB, Tensor, Tensor], Tensor]  # (stab, pixel_values, chunk_lengths) -> STAB tokens (N, d)


@dataclass
class Timing:
    vectorised_ms: float
    per_frame_ms: float

    @property
    def ratio(self) -> float:
        return self.per_frame_ms / self.vectorised_ms


def attend(attention: nn.Module, query: Tensor, keys: Tensor) -> Tensor:
    """One query over one key set with an LSD/FSRA module's weights: query (d,), keys (K, d) -> (d,)."""
    dim, heads = query.shape[0], attention.num_heads
    q = attention.q(query).reshape(heads, 1, dim // heads)  # (H, 1, hd)
    k, v = attention.kv(keys).reshape(-1, 2, heads, dim // heads).permute(1, 2, 0, 3)  # (H, K, hd) each
    weights = (q @ k.transpose(1, 2) * dim**-0.5).softmax(-1)  # (H, 1, K)
    return query + attention.proj((weights @ v).reshape(dim))


def per_frame_stab(stab: STAB, pixel_values: Tensor, chunk_lengths: Tensor) -> Tensor:
    """Reference form: LSTE/GSTRA chunk by chunk, then crop/LSD/FSRA/assembly frame by frame.

    Same weights and the same arithmetic as ``STAB.forward``; only the looping differs.
    Returns (sum_f N_f, d).
    """
    s, dim = stab.lsd_stride, stab.class_embedding.shape[0]
    top_left, size = crop_boxes(F.avg_pool2d(pixel_values[:, 3:4], stab.patch_size)[:, 0], stab.max_crop_patches)
    alpha = torch.sigmoid(stab.balance)
    sequences, start = [], 0
    for length in chunk_lengths.tolist():
        frames = pixel_values[start : start + length]
        patches = stab.patch_embedding(frames[:, :3])  # (T, d, Hp, Wp)
        tokens, video_context = patches, None
        if length > 1:
            lste = stab.lste(patches.transpose(0, 1)[None])  # (1, d, T, Hp, Wp)
            video_context = stab.gstra(stab.temporal_cls_token, lste.flatten(2).transpose(1, 2))[0, 0]  # (d,)
            tokens = lste[0].transpose(0, 1) + patches  # (T, d, Hp, Wp)
        for t in range(length):
            (top, left), (height, width) = top_left[start + t].tolist(), size[start + t].tolist()
            h, w = height // s, width // s
            crop = tokens[t, :, top : top + h * s, left : left + w * s].permute(1, 2, 0)  # (h*s, w*s, d)
            windows = crop.reshape(h, s, w, s, dim).transpose(1, 2).reshape(h * w, s * s, dim)
            grid = stab.lsd(windows.mean(-2), windows).reshape(h, w, dim)
            context = attend(stab.fsra, stab.class_embedding, grid.reshape(h * w, dim))  # (d,)
            if video_context is not None:
                context = stab.fusion_head((1 - alpha) * video_context + alpha * context)
            rows = torch.cat([grid, stab.split_embedding.expand(h, 1, dim)], 1).reshape(-1, dim)
            sequences.append(torch.cat([context[None], rows]))
        start += length
    return torch.cat(sequences)


def vectorised_stab(stab: STAB, pixel_values: Tensor, chunk_lengths: Tensor) -> Tensor:
    return stab(pixel_values, chunk_lengths).tokens


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


def time_call(step: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> float:
    """Mean wall time of ``step`` in ms over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - begin) * 1000 / repeats


def measure(form: Form, stab: STAB, projector: nn.Module, pixels: Tensor, chunks: Tensor, backward: bool, repeats: int,
            warmup: int) -> float:
    params = [*stab.parameters(), *projector.parameters()]

    def step() -> None:
        if not backward:
            with torch.no_grad():
                projector(form(stab, pixels, chunks))
            return
        projector(form(stab, pixels, chunks)).float().square().mean().backward()
        for p in params:
            p.grad = None

    return time_call(step, repeats, warmup, pixels.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 2 on GPU, 0 on CPU")
    parser.add_argument("--videos", type=int, nargs="+", default=[1, 4], help="batch sizes in videos")
    parser.add_argument("--stab-hidden-size", type=int, default=1024)
    parser.add_argument("--llm-hidden-size", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=448)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 0)
    torch.manual_seed(0)
    text = LlamaConfig(hidden_size=args.llm_hidden_size, num_hidden_layers=1, num_attention_heads=8, vocab_size=32)
    config = VideoPandaConfig(text_config=text, stab_hidden_size=args.stab_hidden_size, image_size=args.image_size,
                              teacher_image_size=args.image_size // 2)
    stab = STAB(config).eval().to(device, dtype)
    projector = build_projector(config.stab_hidden_size, config.llm_hidden_size).to(device, dtype)
    with torch.no_grad():  # wake the zero-initialised branches so both forms do real work
        for p in stab.parameters():
            p.add_(0.02 * torch.randn_like(p))

    print(f"STAB + projector, d={config.stab_hidden_size} D={config.llm_hidden_size} {config.image_size}px "
          f"{config.num_frames} frames/video, {device} {dtype}, {args.repeats} repeats after {warmup} warm-up, {torch.get_num_threads()} threads")
    print(f"{'videos':>6} {'pass':>16} {'vectorised ms/video':>20} {'per-frame ms/video':>19} {'speed-up':>9}")
    with torch.no_grad():  # one-time kernel/allocator set-up, so that it lands in neither form's timings
        pixels, chunks = make_batch(1, config)
        per_frame_stab(stab, pixels.to(device, dtype), chunks.to(device))
        vectorised_stab(stab, pixels.to(device, dtype), chunks.to(device))
    for num_videos in args.videos:
        pixels, chunks = make_batch(num_videos, config)
        pixels = pixels.to(device, dtype)
        chunks = chunks.to(device)
        with torch.no_grad():
            difference = (vectorised_stab(stab, pixels, chunks) - per_frame_stab(stab, pixels, chunks)).abs().max()
        for backward in (False, True):
            timing = Timing(
                measure(vectorised_stab, stab, projector, pixels, chunks, backward, args.repeats, warmup) / num_videos,
                measure(per_frame_stab, stab, projector, pixels, chunks, backward, args.repeats, warmup) / num_videos,
            )
            name = "forward+backward" if backward else "forward"
            print(f"{num_videos:>6} {name:>16} {timing.vectorised_ms:>20.1f} {timing.per_frame_ms:>19.1f} "
                  f"{timing.ratio:>8.2f}x")
        print(f"{'':>6} max |vectorised - per-frame| over the STAB tokens: {difference.item():.2e}")


if __name__ == "__main__":
    main()
