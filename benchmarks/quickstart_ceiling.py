"""How much a STAB can learn from the quickstart's number of samples, read by the easiest reader there is.

The quickstart's LLM reads the STAB's tokens through 30 decoder layers and learns from one caption or
conversation per sample. This benchmark removes the LLM: a fresh STAB (the quickstart's geometry, or
``--config`` overrides) is trained end to end together with one linear head per question type on all of its
tokens, each in its place (frame and slot), with a loss on every question a scene answers. It is a far easier
reader to train than the LLM, so what it scores after N samples is an estimate from above of what a
quickstart that saw N samples can reach (an empirical bound, not a proof). Scenes are ``data.synth``'s,
rendered in memory (``quickstart_probe.scenes``); the training pool has the quickstart's 600 videos unless
``--train-scenes`` says otherwise, and the score is on other scenes.
The baseline is chance (uniform guessing over a question's answers). Example::

    python benchmarks/quickstart_ceiling.py --samples 400 800 1600 3200
    python benchmarks/quickstart_ceiling.py --config patch_size=7 lsd_stride=4
"""

from __future__ import annotations

import argparse
import inspect

import numpy as np
import torch
from quickstart_probe import TokenReader, answers, scenes
from torch import Tensor, nn

from videopanda.config import ConfigError, apply_override
from videopanda.data.synth import COARSE_TYPE, NUM_OPTIONS
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.modeling_videopanda import build_videopanda
from videopanda.quickstart.config import QuickstartConfig


def accuracy(reader: TokenReader, heads: nn.ModuleDict, pixels: list[Tensor], labels: list[dict[str, str]],
             classes: dict[str, list[str]]) -> dict[str, float]:
    reader.model.eval()
    with torch.no_grad():
        features = torch.cat([reader.tokens(pixels[i:i + 16]).flatten(1) for i in range(0, len(pixels), 16)])
    reader.model.train()
    scores = {}
    for kind, names in classes.items():
        rows = [i for i, y in enumerate(labels) if kind in y]
        target = torch.tensor([names.index(labels[i][kind]) for i in rows])
        scores[kind] = 100 * float((heads[kind](features[rows]).argmax(1) == target).float().mean())
    return scores


def config_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` items (values parsed as the training CLI's overrides are) -> VideoPandaConfig overrides;
    a malformed item or a key that is not a VideoPandaConfig field is an error."""
    known = inspect.signature(VideoPandaConfig.__init__).parameters
    overrides: dict[str, object] = {}
    for item in items:
        try:
            apply_override(overrides, item)
        except ConfigError as err:
            parser.error(f"--config: {err}")
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        parser.error(f"--config: {', '.join(unknown)} not VideoPandaConfig field(s)")
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[400, 800, 1600, 3200],
                        help="training samples after which to score (the quickstart sees about 750)")
    parser.add_argument("--train-scenes", type=int, default=600, help="distinct training scenes (the quickstart's)")
    parser.add_argument("--test-scenes", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=4, help="the quickstart's")
    parser.add_argument("--lr", type=float, default=1e-3, help="the quickstart's rate for the STAB")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="VideoPandaConfig overrides of the quickstart's geometry (YAML values)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if any(n % args.batch_size for n in args.samples):
        parser.error(f"--samples must be multiples of --batch-size {args.batch_size}, got {args.samples}")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = config_overrides(parser, args.config)
    torch.manual_seed(args.seed)
    model, _ = build_videopanda(QuickstartConfig().llm, **{**QuickstartConfig().model, **overrides})
    reader = TokenReader(model)
    train, test = scenes(args.seed + 11, args.train_scenes), scenes(args.seed + 12, args.test_scenes)
    train_x, test_x = [reader.pixels(s) for s, _ in train], [reader.pixels(s) for s, _ in test]
    train_y, test_y = [answers(*pair) for pair in train], [answers(*pair) for pair in test]
    classes = {kind: sorted({y[kind] for y in train_y if kind in y}) for kind in COARSE_TYPE}

    with torch.no_grad():
        width = reader.tokens(train_x[:1]).flatten(1).shape[1]
    heads = nn.ModuleDict({kind: nn.Linear(width, len(names)) for kind, names in classes.items()})
    model.requires_grad_(False)
    trained = [*model.stab.parameters(), *heads.parameters()]
    for param in model.stab.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    model.train()

    print(f"geometry: {overrides or 'the quickstart'}; {args.train_scenes} training scenes, batches of "
          f"{args.batch_size}, rate {args.lr}; scored on {args.test_scenes} other scenes")
    print("| samples | " + " | ".join(classes) + " |")
    print("|---" * (1 + len(classes)) + "|")
    print("| chance | " + " | ".join(f"{100 / NUM_OPTIONS[kind]:.0f}" for kind in classes) + " |")
    rng = np.random.default_rng(args.seed)
    for step in range(1, max(args.samples) // args.batch_size + 1):
        batch = rng.choice(len(train_x), args.batch_size, replace=False)
        features = reader.tokens([train_x[i] for i in batch]).flatten(1)
        loss = torch.zeros(())
        for kind, names in classes.items():
            rows = [k for k, i in enumerate(batch) if kind in train_y[i]]
            if rows:
                target = torch.tensor([names.index(train_y[batch[k]][kind]) for k in rows])
                loss = loss + nn.functional.cross_entropy(heads[kind](features[rows]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step * args.batch_size in args.samples:
            scores = accuracy(reader, heads, test_x, test_y, classes)
            print(f"| {step * args.batch_size} | " + " | ".join(f"{scores[k]:.0f}" for k in classes) + " |", flush=True)


if __name__ == "__main__":
    main()
