"""videopanda.model: the STAB, the projector and ``VideoPandaForCausalLM`` around any HF causal LM.

Submodules import torch/transformers; import from them directly, e.g.
``from videopanda.model.modeling_videopanda import build_videopanda`` or
``from videopanda.model.release import load_release_checkpoint``.
"""
