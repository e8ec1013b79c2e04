"""transformers' processor and video-processor mixin tests that fail or skip here, each with its reason.

``tests/test_transformers_processor_suite.py`` fails on any failure or skip not listed (``Class::test``).
"""

from __future__ import annotations

_P = "VideoPandaProcessorTest::"
_V = "VideoPandaVideoProcessingTest::"

# transformers' AutoVideoProcessor (and the Auto lookup of a saved video processor) is a stub without
# torchvision, which Video-Panda does not depend on: the video processor is pure torch, and
# VideoPandaProcessor.from_pretrained loads it by its own class.
NO_TORCHVISION = "transformers' AutoVideoProcessor needs torchvision, which videopanda does not depend on"
# The agreed interface (INTERFACE-23): every frame of every video concatenated, pixel_values_videos
# (F_total, 4, S, S) (RGB + validity mask) with video_grid_thw (V, 3) = (frames, S/patch, S/patch) per video.
LAYOUT = ("frames are concatenated over videos, (F_total, 4, S, S) with a mask channel, and video_grid_thw is "
          "per video (frames, S/patch, S/patch): the test assumes stacked (V, T, 3, S, S) or Qwen's patch rows")
NO_NETWORK = "loads a video from a Hub URL; the tests run offline"
NO_IMAGES = "an image is a one-frame video: the processor has no image processor"
NO_AUDIO = "Video-Panda takes no audio"

EXCEPTIONS: dict[str, str] = {
    # the processor
    _P + "test_kwargs_overrides_default_subprocessor_kwargs_1_videos": NO_TORCHVISION,
    _P + "test_processor_from_and_save_pretrained_as_nested_dict": NO_TORCHVISION,
    _P + "test_processor_from_pretrained_vs_from_components": NO_TORCHVISION,
    _P + "test_subprocessor_defaults_0_text": NO_TORCHVISION,
    _P + "test_subprocessor_defaults_2_videos": NO_TORCHVISION,
    _P + "test_subprocessor_defaults_preserved_by_kwargs_1_videos": NO_TORCHVISION,
    _P + "test_tokenizer_decode_defaults": NO_TORCHVISION,
    _P + "test_apply_chat_template_decoded_video_0": LAYOUT,
    _P + "test_apply_chat_template_video_0": NO_NETWORK,
    _P + "test_apply_chat_template_video_1": NO_NETWORK,
    _P + "test_apply_chat_template_video_frame_sampling": NO_NETWORK,
    _P + "test_apply_chat_template_assistant_mask": (
        "return_assistant_tokens_mask needs offsets into the rendered text, which placeholder expansion "
        "changes; training labels come from encode_conversation's own segment offsets"),
    _P + "test_apply_chat_template_tool_calls_no_content": "the templates (Vicuna, SmolLM2's ChatML) have no tools",
    _P + "test_apply_chat_template_image_0": NO_IMAGES,
    _P + "test_apply_chat_template_image_1": NO_IMAGES,
    _P + "test_args_overlap_kwargs": NO_IMAGES,
    _P + "test_doubly_passed_kwargs_0_images": NO_IMAGES,
    _P + "test_kwargs_overrides_default_subprocessor_kwargs_0_images": NO_IMAGES,
    _P + "test_overlapping_text_image_kwargs_handling_0_images": NO_IMAGES,
    _P + "test_processor_text_has_no_visual": NO_IMAGES + " (the test needs images=)",
    _P + "test_structured_kwargs_nested_from_dict_0_images": NO_IMAGES,
    _P + "test_subprocessor_defaults_1_images": NO_IMAGES,
    _P + "test_subprocessor_defaults_preserved_by_kwargs_0_images": NO_IMAGES,
    _P + "test_unstructured_kwargs_0_images": NO_IMAGES,
    _P + "test_unstructured_kwargs_batched_0_images": NO_IMAGES,
    _P + "test_get_num_multimodal_tokens_matches_processor_call": NO_IMAGES + " (it passes images=, refused)",
    _P + "test_replacement_offsets": NO_IMAGES + " (counts image sizes)",
    _P + "test_apply_chat_template_audio": NO_AUDIO,
    _P + "test_apply_chat_template_audio_0": NO_AUDIO,
    _P + "test_apply_chat_template_audio_1": NO_AUDIO,
    _P + "test_apply_chat_template_audio_2": NO_AUDIO,
    _P + "test_apply_chat_template_audio_3": NO_AUDIO,
    _P + "test_chat_template_audio_from_video": NO_AUDIO,
    _P + "test_chat_template_audio_sampling_rate": NO_AUDIO,
    _P + "test_get_num_multimodal_tokens_matches_processor_call_audio": NO_AUDIO,
    _P + "test_kwargs_overrides_default_subprocessor_kwargs_2_audio": NO_AUDIO,
    _P + "test_overlapping_text_image_kwargs_handling_2_audio": NO_AUDIO,
    _P + "test_structured_kwargs_nested_from_dict_2_audio": NO_AUDIO,
    _P + "test_subprocessor_defaults_3_audio": NO_AUDIO,
    _P + "test_subprocessor_defaults_preserved_by_kwargs_2_audio": NO_AUDIO,
    _P + "test_unstructured_kwargs_2_audio": NO_AUDIO,
    _P + "test_unstructured_kwargs_batched_2_audio": NO_AUDIO,
    # the video processor
    _V + "test_video_processor_save_load_with_autovideoprocessor": NO_TORCHVISION,
    _V + "test_call_numpy_4_channels": LAYOUT,
    _V + "test_call_sample_frames": LAYOUT + " (it reads frames at dim 1)",
    _V + "test_video_processor_from_dict_with_kwargs": (
        "asserts a shortest-edge resize and a centre crop (size, crop_size); Video-Panda pads the whole frame "
        "onto an image_size canvas and never crops"),
    _V + "test_override_instance_attributes_does_not_affect_other_instances": (
        "skips itself: no dict size (the canvas is image_size)"),
    _V + "test_video_processor_preprocess_arguments": "skips itself: validation is transformers' validate_kwargs",
    _V + "test_can_compile_fast_video_processor": "transformers marks it slow and accelerator-only",
}
