"""What a quickstart model's visual tokens tell a reader: linear probes, trained STAB against a fresh one.

For synthetic scenes (``data.synth``, rendered in memory: no codec), the STAB's tokens (F frames x T
slots x d) are pooled five ways, each the view of a different reader, and a logistic regression is fitted
per question type on one set of scenes and scored on another:

* ``all``         every token, each in its place: frame and slot identity (an upper bound);
* ``time-mean``   each slot averaged over the frames: a reader that cannot tell frames apart;
* ``half-diff``   first half of the frames minus second half: a reader that tells early from late;
* ``last-slots``  the last frame's tokens, each in its slot;
* ``last-sum``    the last frame's tokens summed: a reader that cannot tell slots apart.

The baseline, in the same run, is the same model with its STAB and projector re-initialised (``--seed``).
Chance is uniform guessing over the answers. Example::

    python benchmarks/quickstart_probe.py --model quickstart/model
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from videopanda.data.synth import COARSE_TYPE, NUM_OPTIONS, Scene, SynthConfig, render_scene, scene_at, scene_questions
from videopanda.data.video_processing_videopanda import VideoPandaVideoProcessor
from videopanda.inference import load_model_dir
from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

POOLINGS: dict[str, Callable[[Tensor], Tensor]] = {  # (F, T, d) -> features
    "all": lambda tokens: tokens.flatten(),
    "time-mean": lambda tokens: tokens.mean(0).flatten(),
    "half-diff": lambda tokens: (tokens[: len(tokens) // 2].mean(0) - tokens[len(tokens) // 2:].mean(0)).flatten(),
    "last-slots": lambda tokens: tokens[-1].flatten(),
    "last-sum": lambda tokens: tokens[-1].sum(0),
}


def scenes(seed: int, count: int) -> list[tuple[Scene, np.random.Generator]]:
    """``count`` scenes cycled as the dataset cycles them, each with the generator its questions draw from."""
    out = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        out.append((scene_at(rng, index), rng))
    return out


def answers(scene: Scene, rng: np.random.Generator) -> dict[str, str]:
    """The dataset's answer per question type; for ``order``, which of the two objects moves first (left or
    right), so that the probe asks about time and not about colour, as the question's answer would."""
    labels = {qa.type: qa.answer for qa in scene_questions(scene, rng)}
    if "order" in labels:
        labels["order"] = str(scene.first)
    return labels


class TokenReader:
    """A model's STAB with its video processor: scenes -> STAB tokens, each in its frame and slot."""

    def __init__(self, model: VideoPandaForCausalLM) -> None:
        self.model = model
        self.processor = VideoPandaVideoProcessor.from_model_config(model.config)
        size = model.config.image_size
        self.slots = self.processor.num_tokens(1, size, size)  # a square frame's, the most

    def pixels(self, scene: Scene) -> Tensor:
        frames = render_scene(scene)[:: SynthConfig.frames_per_step]  # one frame per step, as the release picks
        return self.processor.preprocess_video(frames).pixel_values  # (F, 4, S, S)

    def tokens(self, pixels: list[Tensor]) -> Tensor:
        """(V, F, slots, d) for V videos of F frames each; a frame's tokens zero-padded to a square frame's slots."""
        grid = torch.tensor([[len(p), 1, 1] for p in pixels])
        out = self.model.get_video_features(torch.cat(pixels), grid).last_hidden_state  # (V*F, T, d)
        padded = nn.functional.pad(out.float(), (0, 0, 0, self.slots - out.shape[1]))
        return padded.unflatten(0, (len(pixels), -1))


@torch.no_grad()
def features(model: VideoPandaForCausalLM, batch: list[Scene]) -> dict[str, np.ndarray]:
    """Each pooling's (scenes, features)."""
    reader = TokenReader(model)
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in POOLINGS}
    for start in range(0, len(batch), 16):
        for tokens in reader.tokens([reader.pixels(scene) for scene in batch[start:start + 16]]):  # (F, T, d)
            for name, pool in POOLINGS.items():
                pooled[name].append(pool(tokens).numpy())
    return {name: np.stack(rows) for name, rows in pooled.items()}


def probe_accuracy(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str],
                   l2: float = 1e-2) -> float:
    """Held-out accuracy of an L2-regularised logistic regression on standardised features."""
    classes = sorted(set(train_y))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xa = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    xb = torch.tensor((test_x - mean) / std, dtype=torch.float32)
    ya = torch.tensor([classes.index(y) for y in train_y])
    yb = torch.tensor([classes.index(y) if y in classes else -1 for y in test_y])
    weight = torch.zeros(xa.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(xa @ weight + bias, ya) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((xb @ weight + bias).argmax(1) == yb).float().mean())


def reinitialised(model: VideoPandaForCausalLM, seed: int) -> VideoPandaForCausalLM:
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in [*fresh.stab.modules(), *fresh.projector.modules()]:
        fresh._init_weights(module)
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a quickstart model directory (quickstart/model)")
    parser.add_argument("--train-scenes", type=int, default=450, help="scenes the probes are fitted on")
    parser.add_argument("--test-scenes", type=int, default=180, help="scenes they are scored on")
    parser.add_argument("--seed", type=int, default=0, help="scenes and the fresh STAB's initial weights")
    args = parser.parse_args()

    trained = load_model_dir(args.model, dtype="float32").model
    train, test = scenes(args.seed + 1, args.train_scenes), scenes(args.seed + 2, args.test_scenes)
    train_scenes, test_scenes = [scene for scene, _ in train], [scene for scene, _ in test]
    train_y, test_y = [answers(*pair) for pair in train], [answers(*pair) for pair in test]
    header = " | ".join(f"{who} {name}" for who in ("trained", "fresh") for name in POOLINGS)
    print(f"| question | scenes fitted/scored | chance | {header} |")
    print("|---" * (3 + 2 * len(POOLINGS)) + "|")
    table = {who: (features(p, train_scenes), features(p, test_scenes))
             for who, p in (("trained", trained), ("fresh", reinitialised(trained, args.seed)))}
    for attribute in COARSE_TYPE:  # the dataset's question types
        fit = [i for i, labels in enumerate(train_y) if attribute in labels]
        score = [i for i, labels in enumerate(test_y) if attribute in labels]
        cells = [100 * probe_accuracy(table[who][0][name][fit], [train_y[i][attribute] for i in fit],
                                      table[who][1][name][score], [test_y[i][attribute] for i in score])
                 for who in ("trained", "fresh") for name in POOLINGS]
        print(f"| {attribute} | {len(fit)}/{len(score)} | {100 / NUM_OPTIONS[attribute]:.0f} | "
              + " | ".join(f"{c:.0f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
