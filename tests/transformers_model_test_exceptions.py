"""transformers' ModelTesterMixin tests that fail or skip on VideoPanda, each with its reason
(``test_transformers_model_tests.py``: any other failure or skip, or a listed test that passes, fails that test).
Measured with transformers 5.24 on a CPU; names as pytest reports them."""

from __future__ import annotations

NO_ACCELERATOR = "skipped by transformers: needs a GPU, several GPUs, MPS or its kernels library (CPU run)"
NO_FLASH = "skipped by transformers: needs Flash Attention (CPU run)"
NO_ROPE_TESTER = "skipped by transformers: the rope tests need a tester's base_model_class (a text-only LLM)"
NOT_APPLICABLE = "skipped by transformers: the model has no such part (skip message says which)"

EXCEPTIONS: dict[str, str] = {
    # failures
    "test_model_base_model_prefix": "the STAB and projector sit around a whole causal LM, head included: there is "
                                    "no base model without the head (base_model_prefix is ''), as the test allows",
    # skips
    "test_can_init_all_missing_weights": "skipped by transformers for models outside its priority list "
                                         "(test_model_contract.py checks the meta-device init instead)",
    "test_can_load_from_already_mapped_keys": "skipped by transformers: no key conversion is registered for "
                                              "VideoPanda (its checkpoints keep one set of names)",
    "test_reverse_loading_mapping": "skipped by transformers: no key conversion is registered for VideoPanda",
    "test_causal_lm_loss_honors_shift_labels": "skipped by transformers: it checks models in its own causal-LM "
                                               "mapping names (VideoPanda's loss takes shift_labels itself)",
    "test_encoder_decoder_loss_no_double_shift": NOT_APPLICABLE,
    "test_torch_save_load": "skipped by transformers: VideoPandaConfig is not in its static MODEL_MAPPING",
    "test_sdpa_can_dispatch_composite_models": "skipped by transformers: the STAB is no transformers sub-model "
                                               "with an attention implementation of its own",
    "test_sdpa_can_dispatch_non_composite_models": "skipped by transformers: composite config (text_config)",
    "test_eager_matches_batched_and_grouped_inference_0_fp16": NOT_APPLICABLE,
    "test_eager_matches_batched_and_grouped_inference_1_fp32": NOT_APPLICABLE,
    "test_eager_matches_batched_and_grouped_inference_2_bf16": NOT_APPLICABLE,
    "test_keep_in_fp32_modules": NOT_APPLICABLE,
    "test_keep_in_fp32_modules_exist": NOT_APPLICABLE,
    "test_keep_in_fp32_modules_strict_also_hardcode_fp32": NOT_APPLICABLE,
    "test_moe_models_record_router_logits": NOT_APPLICABLE,
    "test_output_router_logits_from_config": NOT_APPLICABLE,
    "test_resize_position_vector_embeddings": NOT_APPLICABLE,
    "test_sliding_window_mask": NOT_APPLICABLE,
    "test_torch_compile_for_training": "skipped by transformers as slow (RUN_SLOW unset)",
    **dict.fromkeys([
        "test_model_rope_scaling_frequencies", "test_model_rope_scaling_from_config_0_linear",
        "test_model_rope_scaling_from_config_1_dynamic", "test_model_rope_scaling_from_config_2_yarn",
        "test_model_rope_with_partial_rotation", "test_vision_axial_rope",
    ], NO_ROPE_TESTER),
    **dict.fromkeys([
        "test_flash_attn_2_can_compile_with_attention_mask_None_without_graph_break",
        "test_flash_attn_2_can_dispatch_composite_models", "test_flash_attn_2_fp32_ln",
        "test_flash_attn_2_from_config", "test_flash_attn_2_inference_equivalence",
        "test_flash_attn_2_inference_equivalence_right_padding", "test_flash_attn_3_can_dispatch_composite_models",
        "test_flash_attn_3_from_config", "test_flash_attn_3_inference_equivalence",
        "test_flash_attn_3_inference_equivalence_right_padding", "test_flash_attn_4_can_dispatch_composite_models",
        "test_flash_attn_4_from_config", "test_flash_attn_4_inference_equivalence",
        "test_flash_attn_4_inference_equivalence_right_padding",
    ], NO_FLASH),
    **dict.fromkeys([
        "test_can_load_with_device_context_manager", "test_can_load_with_global_device_set", "test_cpu_offload",
        "test_disk_offload_bin", "test_disk_offload_safetensors", "test_flash_attn_kernels_inference_equivalence",
        "test_flash_attn_kernels_mps_inference_equivalence", "test_flex_attention_with_grads",
        "test_kernels_can_load_without_crashing", "test_model_parallelism",
        "test_resize_embeddings_untied_with_deepspeed", "test_resize_embeddings_untied_with_deepspeed_multi_gpu",
        "test_resize_tokens_embeddings_with_deepspeed", "test_resize_tokens_embeddings_with_deepspeed_multi_gpu",
        "test_sdpa_can_compile_dynamic", "test_sdpa_can_dispatch_on_flash",
    ], NO_ACCELERATOR),
}
