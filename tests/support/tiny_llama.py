"""A Llama small enough for CPU that vLLM accepts (head_dim 64; vLLM's CPU attention refuses
stories260K's 8), built from a config with random weights and the real Llama 2 tokenizer, and
LoRA adapters for it whose weights are random too, so each changes the model's answers."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def tiny_llama(test_data: Path, directory: Path) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        torch_dtype="float32",
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(test_data / "models" / "llama2-tokenizer")
    tokenizer.save_pretrained(directory)
    return directory


def random_adapter(model: Path, directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    # init_lora_weights=False: B random too, so the adapter changes the answers.
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)  # fmt: skip
    get_peft_model(LlamaForCausalLM.from_pretrained(model), lora).save_pretrained(directory)
    return directory
