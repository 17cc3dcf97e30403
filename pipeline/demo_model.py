"""The demo's base model where neither `DISTILLERY_BASE_MODEL` nor the shared stories260K
says one: a small instruct model from the hub when the hub answers, else a randomly
initialised smoke model, built here in seconds and labelled as such everywhere it shows, so
that the pipeline still runs end to end offline."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

#: Small enough to train with LoRA on a laptop's CPU, and instruction-tuned (Apache-2.0).
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOKE_LABEL = "RANDOMLY INITIALISED SMOKE MODEL"


def hub_reachable(model: str = HUB_MODEL, timeout_s: float = 5.0) -> bool:
    """Whether the hub serves `model` now (never asked when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model, timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure (the HTTP client's own errors: no DNS) is "no"
        return False
    return True


def smoke_model(out: Path, texts: Iterable[str], vocab_size: int = 2048) -> Path:
    """A Llama of 2 layers and random weights, with a byte-level BPE tokenizer trained on
    `texts`, in `out` (kept if already there). Its answers are noise: it shows that the
    pipeline runs, not what tuning does."""
    if (out / "config.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))  # fmt: skip
    special = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, model_max_length=512, **special
    )
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    tmp = out.with_name(out.name + ".tmp")
    LlamaForCausalLM(config).save_pretrained(tmp)
    fast.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"# {SMOKE_LABEL}\n\nRandom weights and a tokenizer trained on the demo's corpus, made "
        "by `distillery demo` because no base model was reachable (no DISTILLERY_BASE_MODEL, "
        f"no ../shared/models/stories260K, no hub). Its answers are noise.\n"
    )
    (tmp / "distillery.json").write_text(json.dumps({"smoke": True, "label": SMOKE_LABEL}))
    tmp.rename(out)
    return out
