"""A tiny but real GPT-2 model and tokenizer, made on the spot with transformers (no Hub needed)."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "hf-cache keeps one shared copy of every model in S3.",
    "Every node reads it through a local read-through cache.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello models, hello GPU nodes.",
]


def make_tiny_gpt2(dest: Path, n_layer: int = 2, n_embd: int = 32, seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and generation config for a 2-layer GPT-2 into ``dest``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # transformers 5 keeps GPT2TokenizerFast as a lazy alias (of GPT2Tokenizer) that its typed __init__ omits
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast  # type: ignore[attr-defined]

    dest.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(dest)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(fast),
        n_positions=64,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(dest, safe_serialization=True)
    return dest
