"""Per-GPU training memory of the 7B release model on paper: full fine-tuning (ZeRO-2), LoRA and QLoRA.

    python benchmarks/memory_table.py            # prints the markdown table of docs/memory.md

Parameter counts are exact: the LLaMA-2-7B / Vicuna-7B geometry (32 layers, width 4096,
intermediate 11008, vocabulary 32000) and our STAB + projector (d 1024) are built on the meta
device and counted. The STAB's activation bytes per frame are measured: autograd's saved
tensors of one 8-frame 448x448 STAB forward on the CPU (float32, counted at 2 bytes per element
as in bf16), with and without activation checkpointing. The LLM's activations per token and
decoder layer follow the formulas printed with the table (bf16, SDPA/flash attention: no
L x L matrix is kept). Not counted: the CUDA context, allocator fragmentation and DeepSpeed's
communication buckets (``OVERHEAD_GB`` stands for them).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

D, FFN, LAYERS, VOCAB = 4096, 11008, 32, 32000  # LLaMA-2-7B: width, MLP width, layers, vocabulary
TOKENS_PER_FRAME = 273  # 448x448: 16x16 LSD grid -> 1 + 16 * 17 (spec section 2)
TEXT_TOKENS = 256  # prompt + answer of a Video-ChatGPT sample
LABELLED = 256  # positions where the LLM head runs (answer tokens)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OVERHEAD_GB = 1.5
CARDS_GB = (24, 48, 80)
GB = 1e9


@dataclass(frozen=True)
class Counts:
    llm: int  # all LLM parameters
    llm_linear: int  # the decoder layers' linear weights (what NF4 quantizes)
    visual: int  # STAB + projector
    lora: dict[int, int]  # rank -> adapter parameters on LORA_TARGETS


def count_parameters() -> Counts:
    from transformers import LlamaConfig, LlamaForCausalLM

    from videopanda.model.configuration_videopanda import VideoPandaConfig
    from videopanda.model.projector import build_projector
    from videopanda.model.stab import STAB

    config = LlamaConfig(hidden_size=D, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=VOCAB)
    with torch.device("meta"):
        llm = LlamaForCausalLM(config)
        visual = [STAB(VideoPandaConfig(text_config=config)), build_projector(1024, D)]
    targets = [m for name, m in llm.named_modules() if name.rsplit(".", 1)[-1] in LORA_TARGETS]
    return Counts(
        llm=sum(p.numel() for p in llm.parameters()),
        llm_linear=sum(m.weight.numel() for m in targets),
        visual=sum(p.numel() for part in visual for p in part.parameters()),
        lora={r: sum(r * (m.in_features + m.out_features) for m in targets) for r in (64, 128)},
    )


def stab_bytes_per_frame(checkpointing: bool) -> float:
    """Saved-for-backward bytes per frame of a release-size STAB (8 frames, 448x448), at 2 bytes per element."""
    from transformers import LlamaConfig

    from videopanda.model.configuration_videopanda import VideoPandaConfig
    from videopanda.model.modeling_videopanda import VideoPandaForCausalLM

    tiny_llm = LlamaConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           vocab_size=16)
    torch.manual_seed(0)
    model = VideoPandaForCausalLM(VideoPandaConfig(text_config=tiny_llm)).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    frames = torch.randn(8, 4, 448, 448)
    frames[:, 3] = 1.0
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * (2 if tensor.is_floating_point() else tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.stab(frames, torch.tensor([4, 4]))  # checkpointed blocks keep only their inputs
    return saved / 8


def llm_activation_bytes(tokens: int, checkpointing: bool, lora_dropout: bool) -> float:
    """Per sample, bf16. Per token and layer: 8D + 4FFN elements kept (two norms' inputs/outputs, q k v, the
    attention output, gate, up, SiLU(gate), their product); checkpointed: the layer input D, plus one
    layer's full set while it is recomputed. LoRA dropout adds one copy (2 B) and a mask (1 B) of each
    adapted layer's input: 6D + FFN elements."""
    per_layer = 2 * (8 * D + 4 * FFN) + (3 * (6 * D + FFN) if lora_dropout else 0)
    kept = tokens * (LAYERS * 2 * D + per_layer) if checkpointing else tokens * LAYERS * per_layer
    head = LABELLED * VOCAB * (2 + 4 + 4)  # bf16 logits, fp32 log-softmax and its gradient
    return kept + head


def states_bytes(method: str, counts: Counts, gpus: int) -> float:
    """Weights, gradients and AdamW states. Full: bf16 weights 2, bf16 grads 2 and fp32 master + m + v 12
    bytes per parameter, ZeRO-2 partitioning grads and optimizer over the GPUs. LoRA: frozen bf16 base (2),
    trainable adapters + STAB + projector in fp32 with fp32 grads and AdamW (16). QLoRA: NF4 base linear
    weights at 0.5 B + double-quantized constants (~0.127 bits), the rest of the LLM in bf16."""
    if method == "full":
        trained = counts.llm + counts.visual
        return 2 * trained + (2 + 12) * trained / gpus
    rank = 128 if method == "lora" else 64
    trainable = counts.lora[rank] + counts.visual
    if method == "lora":
        base = 2 * counts.llm
    else:
        base = counts.llm_linear * (0.5 + 0.127 / 8) + 2 * (counts.llm - counts.llm_linear)
    return base + 16 * trainable


def smallest_card(gigabytes: float) -> str:
    return next((f"{card}" for card in CARDS_GB if gigabytes <= card), "-")


def table(counts: Counts, stab: dict[bool, float], gpus: int) -> list[str]:
    """One row per method, frames and checkpointing; per batch size: GB per GPU (the smallest card that fits)."""
    methods = {"full": f"full, ZeRO-2 on {gpus} GPUs", "lora": "LoRA r128, 1 GPU", "qlora": "QLoRA r64, 1 GPU"}
    rows = ["| method | frames | checkpointing | batch 1 | batch 2 | batch 4 |", "|---|---|---|---|---|---|"]
    for method, label in methods.items():
        fixed = states_bytes(method, counts, gpus) + OVERHEAD_GB * GB
        for frames in (8, 32, 64):
            tokens = frames * TOKENS_PER_FRAME + TEXT_TOKENS
            for checkpointing in (False, True):
                llm_bytes = llm_activation_bytes(tokens, checkpointing, method != "full")
                per_sample = llm_bytes + frames * stab[checkpointing]
                cells = [(fixed + batch * per_sample) / GB for batch in (1, 2, 4)]
                rows.append(f"| {label} | {frames} | {'yes' if checkpointing else 'no'} | "
                            + " | ".join(f"{gb:.1f} ({smallest_card(gb)})" for gb in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8, help="GPUs sharing ZeRO-2's gradients and optimizer states")
    args = parser.parse_args()
    counts = count_parameters()
    stab = {flag: stab_bytes_per_frame(flag) for flag in (False, True)}
    print(f"LLM {counts.llm / 1e9:.3f}B parameters ({counts.llm_linear / 1e9:.3f}B in decoder linears), "
          f"STAB + projector {counts.visual / 1e6:.1f}M, LoRA r64 {counts.lora[64] / 1e6:.1f}M, "
          f"r128 {counts.lora[128] / 1e6:.1f}M")
    print(f"STAB activations per frame (measured, bf16 sizes): {stab[False] / 1e6:.1f} MB, "
          f"{stab[True] / 1e6:.1f} MB checkpointed; tokens per sample: frames x {TOKENS_PER_FRAME} + {TEXT_TOKENS}")
    print("\n".join(table(counts, stab, args.gpus)))


if __name__ == "__main__":
    main()
