"""Configuration of a Video-Panda model: STAB geometry + the wrapped LLM's config.

Defaults are the release (d=1024, 448x448 student frames, 224x224 teacher
frames, patch 14, LSD stride 2, chunks of 4 frames, 8 frames per video).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, PretrainedConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"  # one placeholder per frame in prompts; expanded to that frame's token count


def image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of ``IMAGE_TOKEN`` in ``tokenizer``; a tokenizer without it is a ValueError."""
    token_id = tokenizer.get_vocab().get(IMAGE_TOKEN)
    if token_id is None:
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token: load it with videopanda.model.llm.load_tokenizer")
    return token_id


class VideoPandaConfig(PretrainedConfig):
    model_type = "videopanda"
    sub_configs = {"text_config": AutoConfig}
    # The video tower's output width (``get_video_features``' last_hidden_state, before the projector) under the
    # name transformers' multimodal models use for it.
    attribute_map = {"out_hidden_size": "stab_hidden_size"}

    def __init__(
        self,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        stab_hidden_size: int = 1024,
        stab_num_heads: int = 8,
        stab_dropout: float = 0.5,
        patch_size: int = 14,
        lsd_stride: int = 2,
        chunk_length: int = 4,
        num_frames: int = 8,
        image_size: int = 448,
        teacher_image_size: int = 224,
        teacher_patch_size: int = 14,
        max_crop_patches: int = 16,
        image_token_id: int | None = None,
        use_distillation: bool = False,
        teacher_hidden_size: int = 1024,
        distill_layer_rate: int = 4,
        distill_num_heads: int = 8,
        prompt_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", "llama")
            text_config = AutoConfig.for_model(model_type, **text_config)
        self.text_config: PretrainedConfig | None = text_config
        self.stab_hidden_size = stab_hidden_size
        self.stab_num_heads = stab_num_heads
        self.stab_dropout = stab_dropout
        self.patch_size = patch_size
        self.lsd_stride = lsd_stride
        self.chunk_length = chunk_length
        self.num_frames = num_frames
        self.image_size = image_size
        self.teacher_image_size = teacher_image_size
        self.teacher_patch_size = teacher_patch_size
        self.max_crop_patches = max_crop_patches
        self.image_token_id = image_token_id
        self.use_distillation = use_distillation
        self.teacher_hidden_size = teacher_hidden_size
        self.distill_layer_rate = distill_layer_rate
        self.distill_num_heads = distill_num_heads
        # The template inference prompts with (``data.conversation``): recorded by training and ``convert``.
        self.prompt_template = prompt_template
        super().__init__(**kwargs)
        self._validate_geometry()

    def _validate_geometry(self) -> None:
        if self.num_frames % self.chunk_length:
            raise ValueError(f"num_frames={self.num_frames} must be a multiple of chunk_length={self.chunk_length}")
        if self.image_size % (self.patch_size * self.lsd_stride):
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch_size*lsd_stride")
        if self.stab_hidden_size % self.stab_num_heads:
            raise ValueError(f"stab_hidden_size={self.stab_hidden_size} must divide into {self.stab_num_heads} heads")

    @property
    def llm_config(self) -> PretrainedConfig:
        """The wrapped LLM's config (``text_config``), which every model needs."""
        if self.text_config is None:
            raise ValueError("this VideoPandaConfig has no text_config (the wrapped LLM's config)")
        return self.text_config

    @property
    def llm_hidden_size(self) -> int:
        return self.llm_config.hidden_size


# Known to ``AutoConfig`` (and so to ``AutoTokenizer`` reading a model directory, which otherwise falls back
# to a blank config and warns); ``modeling_videopanda`` registers the model with ``AutoModelForCausalLM``.
AutoConfig.register(VideoPandaConfig.model_type, VideoPandaConfig, exist_ok=True)
