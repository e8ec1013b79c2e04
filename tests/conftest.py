"""Shared test fixtures: golden-tensor directory, tiny LLM configs, real video files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """``$VIDEOPANDA_GOLDEN_DIR`` if set, else ``../shared/golden`` beside the checkout."""
    return Path(os.environ.get("VIDEOPANDA_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden"))


def golden_cases(kind: str) -> list:
    """Every ``{kind}_*.json`` + ``.safetensors`` pair in the golden directory, as pytest params.

    An empty directory (or none) yields a single skipped param, so the kind skips cleanly.
    """
    directory = golden_dir()
    cases = sorted(p.with_suffix("") for p in directory.glob(f"{kind}_*.json") if p.with_suffix(".safetensors").exists())
    if not cases:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {kind}_* golden cases in {directory}"))]
    return [pytest.param(case, id=case.name) for case in cases]


def tiny_llama_config(**overrides):
    """A 2-layer, width-32 LLaMA config for fast CPU tests."""
    from transformers import LlamaConfig

    params = dict(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    params.update(overrides)
    return LlamaConfig(**params)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from videopanda.model.llm import find_smollm2_gguf

    return find_smollm2_gguf()


def moving_square_frames(num_frames: int, height: int, width: int, color=(255, 0, 0), seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a square moving left to right on a grey background."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, height, width, 3), 60, np.uint8)
    side = max(4, min(height, width) // 4)
    top = int(rng.integers(0, height - side + 1))
    for t in range(num_frames):
        left = int(t * (width - side) / max(1, num_frames - 1))
        frames[t, top : top + side, left : left + side] = color
    return frames


@pytest.fixture
def make_video(tmp_path):
    """Write a real video file: ``make_video("a.mp4", num_frames=16, height=64, width=96, fps=8)``."""
    from videopanda.data.video_writer import write_video

    def _make(name: str, num_frames: int = 16, height: int = 64, width: int = 96, fps: float = 8.0, **kw) -> Path:
        return write_video(tmp_path / name, moving_square_frames(num_frames, height, width, **kw), fps=fps)

    return _make


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The embedded SmolLM2 tokenizer with the <image> placeholder token."""
    from videopanda.model.llm import load_tokenizer

    return load_tokenizer("smollm2")


def small_videopanda_config(tokenizer, **overrides):
    """A VideoPandaConfig with 112x112 frames (teacher 56) around a tiny LLaMA sized for ``tokenizer``."""
    from videopanda.model.configuration_videopanda import IMAGE_TOKEN, VideoPandaConfig

    params = dict(stab_hidden_size=32, image_size=112, teacher_image_size=56,
                  image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    params.update(overrides)
    text = tiny_llama_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return VideoPandaConfig(text_config=text, **params)
