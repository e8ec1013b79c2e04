"""The projector from STAB width d to LLM width D (the release's ``mlp2x_gelu``)."""

from torch import nn


def build_projector(stab_hidden_size: int, llm_hidden_size: int) -> nn.Sequential:
    """``Linear(d, D) -> GELU -> Linear(D, D)``; indices 0 and 2 match ``model.video_projector.{0,2}``."""
    return nn.Sequential(
        nn.Linear(stab_hidden_size, llm_hidden_size),
        nn.GELU(),
        nn.Linear(llm_hidden_size, llm_hidden_size),
    )
