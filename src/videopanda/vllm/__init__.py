"""Video-Panda on vLLM: an out-of-tree model plugin (entry point ``vllm.general_plugins``).

vLLM runs in an environment of its own (``scripts/vllm_env.sh``): it pins a transformers older than
ours, so this package imports only what works there — our config, the processor's geometry, the STAB
and the projector — never ``modeling_videopanda``. The text model is vLLM's own implementation of the
model directory's ``text_config`` (LLaMA for the release, SmolLM2's LLaMA for the quickstart).

* ``model``: ``VideoPandaForVLLM``, registered for the ``VideoPandaForCausalLM`` architecture;
* ``processing``: the multimodal processor (frames -> ``pixel_values`` and the prompt's placeholders);
* ``geometry``: the one place that calls the processor's geometry;
* ``video_loader``: the ``videopanda`` video loader, the release's frame sampling (``read_video_frames``);
* ``serve``: ``python -m videopanda.vllm.serve MODEL_DIR``, vLLM's OpenAI server with these settings.
"""

from __future__ import annotations

ARCHITECTURE = "VideoPandaForCausalLM"  # config.json's "architectures" (training, convert, quickstart)
VIDEO_LOADER = "videopanda"  # the name ``--media-io-kwargs '{"video": {"video_backend": ...}}'`` selects


def register() -> None:
    """vLLM's plugin hook (run in every vLLM process): the architecture, the config class, the video loader."""
    from vllm import ModelRegistry

    import videopanda.model.configuration_videopanda  # noqa: F401  registers "videopanda" with AutoConfig
    import videopanda.vllm.video_loader  # noqa: F401  registers the loader

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "videopanda.vllm.model:VideoPandaForVLLM")
