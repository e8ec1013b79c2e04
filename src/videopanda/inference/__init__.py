"""The one inference layer: loading any model directory, the predictor, batched generation and streaming.

``loading`` (every model directory kind -> a model and its tokenizer, in one place),
``predictor`` (``VideoPandaPredictor``: videos and questions -> answers; ``ChatLLM``: a plain
chat model) and ``generation`` (per-request limits, stops and streamed text in one batched
``generate``). ``serve``, ``cli``, ``lmms``, the quickstart and ``eval`` stand on the names
exported here.
"""

from videopanda.inference.generation import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    GenerationRequest,
    GenerationResult,
    cut_at_stops,
)
from videopanda.inference.loading import (
    LOADABLE_KINDS,
    LoadedModel,
    is_loadable,
    load_model_dir,
    read_model_config,
    require_loadable,
)
from videopanda.inference.predictor import ChatLLM, GenerationConfig, VideoPandaPredictor
from videopanda.model.directory import model_template
from videopanda.runtime import cast_weights

__all__ = [
    "FINISH_CANCELLED",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "ChatLLM",
    "GenerationConfig",
    "GenerationRequest",
    "GenerationResult",
    "LOADABLE_KINDS",
    "LoadedModel",
    "VideoPandaPredictor",
    "cast_weights",
    "cut_at_stops",
    "is_loadable",
    "load_model_dir",
    "model_template",
    "read_model_config",
    "require_loadable",
]
