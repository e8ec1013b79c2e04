"""videopanda: encoder-free video-language models (Video-Panda, CVPR 2025).

Pipeline: ``data`` (decode, sample, transform, tokenize) -> ``model`` (STAB,
projector, any Hugging Face causal LM) -> ``train`` (three-stage recipe) ->
``eval`` (zero-shot video QA with an LLM judge), plus a thin ``cli``.
"""

__version__ = "0.1.0"
