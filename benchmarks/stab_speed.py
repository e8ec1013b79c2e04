"""Speed of our STAB + projector against the release's own vision tokenizer, same weights.

The baseline is the release's code itself: ``videopanda/model/multimodal_encoder/vision_tokenizer.py``
imported from a checkout of github.com/jh-yi/Video-Panda that you give (nothing of it lives in this
repository). Only its imports are stubbed for the import: the release's ``videopanda.constants`` (its own
file), timm's ``DropPath`` (unused at drop_path 0) and the LanguageBind processors (only their patch and
LSD strides are read). Its ``VideoTokenizer`` gets our STAB's weights under the release's names
(``convert.ours_to_release``) and runs as the release's ``encode_videos`` calls it: per video, the
video's chunks as one batch, the projector applied per frame inside. The two outputs are compared
(the run fails if they differ by more than the dtype's tolerance), then each measurement alternates
release and ours repeat by repeat, so load that comes and goes hits both alike; medians are printed.

Release size by default (d=1024, D=4096, 448x448 frames, 8-frame videos of mixed aspect ratios),
batches of 1 and 4 videos; forward (no grad) and forward+backward.

    git clone https://github.com/jh-yi/Video-Panda /tmp/Video-Panda
    python benchmarks/stab_speed.py --release-repo /tmp/Video-Panda --threads 2   # CPU fp32, a few minutes
    python benchmarks/stab_speed.py --release-repo /tmp/Video-Panda --device cuda --dtype bf16 --repeats 20
    python benchmarks/stab_speed.py --release-repo /tmp/Video-Panda --videos 1 --profile  # per operator, per block
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from transformers import LlamaConfig

from videopanda.data.transform import preprocess_frames
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.convert import ours_to_release
from videopanda.model.projector import build_projector
from videopanda.model.stab import STAB

# (height, width, real frames) of the benchmark videos, cycled: square, 16:9, 3:4 portrait, 21:9 with padding frames.
VIDEO_SHAPES = ((480, 480, 8), (360, 640, 8), (640, 480, 8), (270, 630, 6))
FRAMES_PER_VIDEO = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Largest |release - ours| over the projected tokens accepted as "the same function", per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.5, torch.float16: 0.1}
TOKENIZER_FILE = Path("videopanda/model/multimodal_encoder/vision_tokenizer.py")
RELEASE_STAB_PREFIX = "model.video_tower."
# Share of the machine's CPU time that other processes may take during the run before the figures are flagged.
OTHERS_WARN_SHARE = 0.05
Form = Callable[[Tensor, Tensor], Tensor]  # (pixel_values, chunk_lengths) -> projected tokens (sum N_f, D)


class Timing(NamedTuple):
    wall_ms: float
    cpu_ms: float  # CPU time of the busiest thread (NaN off CPU or off Linux)


@contextlib.contextmanager
def stubbed_modules(stubs: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put ``stubs`` into ``sys.modules`` for the duration, then restore whatever was there."""
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def module_from_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_tokenizer_module(repo: Path) -> types.ModuleType:
    """Import the release's vision_tokenizer.py from ``repo`` with its unneeded imports stubbed."""
    path = repo / TOKENIZER_FILE
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: --release-repo must be a checkout of github.com/jh-yi/Video-Panda")
    timm_layers = types.ModuleType("timm.models.layers")
    timm_layers.DropPath = nn.Identity  # only built for drop_path > 0, which the release's STAB never uses
    languagebind = "videopanda.model.multimodal_encoder.languagebind"
    image_processing = types.ModuleType(f"{languagebind}.image.processing_image")
    video_processing = types.ModuleType(f"{languagebind}.video.processing_video")
    image_processing.LanguageBindImageProcessor = StrideOnlyProcessor
    video_processing.LanguageBindVideoProcessor = StrideOnlyProcessor
    stubs = {
        "videopanda.constants": module_from_file("videopanda.constants", repo / "videopanda/constants.py"),
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": timm_layers,
        image_processing.__name__: image_processing,
        video_processing.__name__: video_processing,
    }
    with stubbed_modules(stubs):
        return module_from_file("release_vision_tokenizer", path)


class StrideOnlyProcessor:
    """Stands in for the LanguageBind processors: the tokenizer reads only these two strides."""

    def __init__(self, config: dict[str, int]) -> None:
        self.patch_stride = config["patch_stride"]
        self.conv_stride = config["conv_stride"]


def build_release(repo: Path, config: VideoPandaConfig, stab: STAB) -> nn.Module:
    """The release's ``VideoTokenizer`` holding ``stab``'s weights (strict load, eval mode, same device/dtype)."""
    module = release_tokenizer_module(repo)
    release_config = types.SimpleNamespace(mm_video_tower="LanguageBind/LB_video")  # 'LB' selects its processor
    strides = {"patch_stride": config.patch_size, "conv_stride": config.lsd_stride}
    tokenizer = module.VideoTokenizer(config.stab_hidden_size, release_config, strides)
    names = ours_to_release({f"stab.{k}": v for k, v in stab.state_dict().items()})
    weights = {k[len(RELEASE_STAB_PREFIX) :]: v for k, v in names.items() if k.startswith(RELEASE_STAB_PREFIX)}
    tokenizer.load_state_dict(weights, strict=True)
    return tokenizer.to(stab.patch_embedding.weight).eval()


def release_form(tokenizer: nn.Module, projector: nn.Module) -> Form:
    """As the release's ``encode_videos``: per video, its chunks as one batch, per-frame outputs concatenated."""

    def run(pixel_values: Tensor, chunk_lengths: Tensor) -> Tensor:
        length = int(chunk_lengths[0])
        outputs = []
        for video in pixel_values.split(FRAMES_PER_VIDEO):  # (8, 4, S, S)
            frames, _ = tokenizer(video.unflatten(0, (-1, length)), projector)  # (C, T, 4, S, S) -> [(N_f, D)]
            outputs.extend(frames)
        return torch.cat(outputs)

    return run


def our_form(stab: STAB, projector: nn.Module) -> Form:
    return lambda pixel_values, chunk_lengths: projector(stab(pixel_values, chunk_lengths).tokens)


def make_batch(num_videos: int, config: VideoPandaConfig, seed: int = 0) -> tuple[Tensor, Tensor]:
    """pixel_values (8*V, 4, S, S) of videos with mixed aspect ratios, chunk_lengths (2*V,)."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(num_videos):
        height, width, real = VIDEO_SHAPES[i % len(VIDEO_SHAPES)]
        frames = rng.integers(0, 256, (real, height, width, 3), dtype=np.uint8)
        videos.append(preprocess_frames(frames, image_size=config.image_size, num_frames=config.num_frames,
                                        teacher_image_size=config.teacher_image_size, with_teacher=False).pixel_values)
    chunks = num_videos * config.num_frames // config.chunk_length
    return torch.cat(videos), torch.full((chunks,), config.chunk_length, dtype=torch.long)


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds each of this process's threads has used (Linux ``/proc``; empty elsewhere)."""
    seconds = {}
    for stat in Path(f"/proc/{os.getpid()}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            seconds[stat.parent.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def timed_step(form: Form, modules: list[nn.Module], pixels: Tensor, chunks: Tensor, backward: bool) -> Timing:
    """Wall ms and busiest-thread CPU ms of one forward (no grad) or forward+backward of ``form``.

    The CPU time of the busiest thread is what the wall time would be on an otherwise idle machine (the
    threads run side by side); other processes inflate the wall time far more than it.
    """
    if pixels.device.type == "cuda":
        torch.cuda.synchronize(pixels.device)
    threads, begin = thread_cpu_seconds(), time.perf_counter()
    if backward:
        form(pixels, chunks).float().square().mean().backward()
    else:
        with torch.no_grad():
            form(pixels, chunks)
    if pixels.device.type == "cuda":
        torch.cuda.synchronize(pixels.device)
    elapsed, after = (time.perf_counter() - begin) * 1000, thread_cpu_seconds()
    busiest = max((after[t] - threads.get(t, 0.0) for t in after), default=float("nan")) * 1000
    for module in modules:
        module.zero_grad(set_to_none=True)
    return Timing(elapsed, busiest if pixels.device.type == "cpu" else float("nan"))


def compare(forms: dict[str, tuple[Form, list[nn.Module]]], pixels: Tensor, chunks: Tensor, backward: bool,
            repeats: int, warmup: int) -> dict[str, Timing]:
    """Median timings per form: each repeat runs every form in turn, so load drift hits all alike."""
    times: dict[str, list[Timing]] = {name: [] for name in forms}
    for step in range(warmup + repeats):
        for name, (form, modules) in forms.items():
            timing = timed_step(form, modules, pixels, chunks, backward)
            if step >= warmup:
                times[name].append(timing)
    return {name: Timing(statistics.median(t.wall_ms for t in values), statistics.median(t.cpu_ms for t in values))
            for name, values in times.items()}


def build(args: argparse.Namespace, device: torch.device,
          dtype: torch.dtype) -> tuple[VideoPandaConfig, STAB, nn.Module]:
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


class CpuShare:
    """CPU seconds the whole machine and this process spent since construction (Linux ``/proc/stat``)."""

    def __init__(self) -> None:
        self.begin = (self._machine_seconds(), self._own_seconds(), time.perf_counter())

    @staticmethod
    def _machine_seconds() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def others(self) -> float | None:
        """Share of the machine's CPU capacity that other processes used since construction."""
        machine, own, wall = self._machine_seconds(), self._own_seconds(), time.perf_counter()
        if machine is None or self.begin[0] is None:
            return None
        others = (machine - self.begin[0]) - (own - self.begin[1])
        return max(others, 0.0) / ((wall - self.begin[2]) * (os.cpu_count() or 1))


# Blocks timed by --profile, by module path: ours, and the release's module for the same step.
OUR_BLOCKS = ("lste", "gstra", "lsd", "fsra", "fusion_head")
RELEASE_BLOCKS = ("patch_embedding", "lmhra1", "dpe", "dec", "local_attention", "global_attention", "proj")
# Our STAB's methods, timed as blocks too.
OUR_STEPS = ("_embed_patches", "_temporal", "_crop_windows", "_pad_per_frame", "_assemble")


@contextlib.contextmanager
def labelled_blocks(modules: dict[str, nn.Module], methods: dict[str, tuple[object, str]]) -> Iterator[None]:
    """Record each module's and method's calls under its name in the profiler's trace.

    A module's backward is recorded too, as ``name (backward)``: from its output's gradient arriving to its
    inputs' gradients leaving (module backward hooks). Methods and modules whose inputs need no gradient
    (the release's patch embedding) get no backward range.
    """
    ranges: dict[str, list[torch.autograd.profiler.record_function]] = {"forward": [], "backward": []}

    def enter(name: str, stack: str) -> None:
        ranges[stack].append(torch.autograd.profiler.record_function(f"block:{name}"))
        ranges[stack][-1].__enter__()

    def leave(stack: str) -> None:
        if ranges[stack]:
            ranges[stack].pop().__exit__(None, None, None)

    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda *_, name=name: enter(name, "forward")))
        handles.append(module.register_forward_hook(lambda *_: leave("forward")))
        handles.append(module.register_full_backward_pre_hook(
            lambda *_, name=name: enter(f"{name} (backward)", "backward")))
        handles.append(module.register_full_backward_hook(lambda *_: leave("backward")))
    for name, (owner, attribute) in methods.items():
        method = getattr(owner, attribute)

        def wrapped(*args: object, method: Callable = method, name: str = name) -> object:
            with torch.autograd.profiler.record_function(f"block:{name}"):
                return method(*args)

        setattr(owner, attribute, wrapped)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for owner, attribute in methods.values():
            delattr(owner, attribute)  # the instance attribute set above; the class's method shows again


def profile(name: str, form: Form, blocks: contextlib.AbstractContextManager, pixels: Tensor, chunks: Tensor,
            rows: int, backward: bool) -> None:
    """One forward (no grad) or forward+backward of ``form`` under torch.profiler.

    Prints per-operator (self time, backward operators included) and per-block (inclusive) tables.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.set_grad_enabled(backward), blocks, torch.profiler.profile(activities=activities) as prof:
        begin = time.perf_counter()
        if backward:
            form(pixels, chunks).float().square().mean().backward()
        else:
            form(pixels, chunks)
        total = (time.perf_counter() - begin) * 1000
    events = prof.key_averages()
    print(f"\n{name}: {'forward+backward' if backward else 'forward'} {total:.0f} ms (wall) under the profiler;"
          " operators by self CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))
    print(f"{name}: blocks (inclusive CPU time; nested blocks are counted in their parents too)")
    print(f"{'block':>36} {'calls':>6} {'ms':>9} {'share':>6}")
    for event in sorted((e for e in events if e.key.startswith("block:")), key=lambda e: -e.cpu_time_total):
        ms = event.cpu_time_total / 1000
        print(f"{event.key[6:]:>36} {event.count:>6} {ms:>9.1f} {100 * ms / total:>5.1f}%")


def load_line(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release-repo", type=Path, required=True,
                        help="checkout of github.com/jh-yi/Video-Panda (its vision_tokenizer.py is the baseline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per form and measurement (median)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first; default 3 on GPU, 0 on CPU")
    parser.add_argument("--videos", type=int, nargs="+", default=[1, 4], help="batch sizes in videos")
    parser.add_argument("--passes", nargs="+", choices=["forward", "backward"], default=["forward", "backward"],
                        help="forward (no grad) and/or forward+backward")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: profile one call per form, batch size and pass (operators, blocks)")
    parser.add_argument("--profile-rows", type=int, default=15, help="operators listed by --profile")
    parser.add_argument("--stab-hidden-size", type=int, choices=[1024, 1152], default=1024,
                        help="widths the release builds with 8 heads")
    parser.add_argument("--llm-hidden-size", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=448)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 0)
    config, stab, projector = build(args, device, dtype)
    tokenizer = build_release(args.release_repo, config, stab)
    forms = {"release": (release_form(tokenizer, projector), [tokenizer, projector]),
             "ours": (our_form(stab, projector), [stab, projector])}
    print(f"STAB + projector, d={config.stab_hidden_size} D={config.llm_hidden_size} {config.image_size}px "
          f"{config.num_frames} frames/video, {device} {dtype}, median of {args.repeats} after {warmup} warm-up, "
          f"{torch.get_num_threads()} threads; release: {args.release_repo / TOKENIZER_FILE}")
    print(load_line("before"), flush=True)
    cpu = CpuShare()
    if not args.profile:
        print(f"{'videos':>6} {'pass':>16} {'release ms/video':>17} {'ours ms/video':>14} {'release/ours':>13}"
              f" {'by busiest-thread CPU':>22}")
    for num_videos in args.videos:
        pixels, chunks = make_batch(num_videos, config)
        pixels, chunks = pixels.to(device, dtype), chunks.to(device)
        with torch.no_grad():  # also the one-time kernel/allocator set-up, outside both forms' timings
            difference = (forms["ours"][0](pixels, chunks) - forms["release"][0](pixels, chunks)).abs().max().item()
        print(f"{'':>6} max |release - ours| over the projected tokens: {difference:.2e}", flush=True)
        if not difference <= TOLERANCE[dtype]:
            raise SystemExit(f"error: the release's tokenizer and ours disagree by {difference:.2e} "
                             f"(tolerance {TOLERANCE[dtype]:.0e}): not the same function, no timing")
        if args.profile:
            for backward in [p == "backward" for p in args.passes]:
                release_blocks = labelled_blocks({"release." + n: getattr(tokenizer, n) for n in RELEASE_BLOCKS}
                                                 | {"projector": projector}, {})
                our_blocks = labelled_blocks({n: getattr(stab, n) for n in OUR_BLOCKS} | {"projector": projector},
                                             {n: (stab, n) for n in OUR_STEPS})
                profile(f"release, {num_videos} video(s)", forms["release"][0], release_blocks, pixels, chunks,
                        args.profile_rows, backward)
                profile(f"ours, {num_videos} video(s)", forms["ours"][0], our_blocks, pixels, chunks,
                        args.profile_rows, backward)
                for module in forms["release"][1] + forms["ours"][1]:
                    module.zero_grad(set_to_none=True)
            continue
        for backward in [p == "backward" for p in args.passes]:
            median = compare(forms, pixels, chunks, backward, args.repeats, warmup)
            release, ours = median["release"], median["ours"]
            name = "forward+backward" if backward else "forward"
            print(f"{num_videos:>6} {name:>16} {release.wall_ms / num_videos:>17.1f} "
                  f"{ours.wall_ms / num_videos:>14.1f} {release.wall_ms / ours.wall_ms:>12.2f}x "
                  f"{release.cpu_ms / ours.cpu_ms:>21.2f}x", flush=True)
    print(load_line("after"))
    others = cpu.others()
    if others is not None:
        print(f"other processes used {100 * others:.0f}% of the machine's CPU during the run", flush=True)
        if others > OTHERS_WARN_SHARE:
            print("warning: something else was using the CPU; absolute times are inflated and ratios noisy",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
