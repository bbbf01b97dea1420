"""Builds tiny causal LMs for the LLM-oracle tests: a word-level tokenizer made with `tokenizers` and a
2-layer GPT-2, saved with save_pretrained so the oracle loads them like any local checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[EOS]"]


def _tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]")


def build_tiny_lm(path: Path, corpus: list[str], reply: str | None = None, steps: int = 150,
                  window: int = 64) -> Path:
    """Save a tiny GPT-2 + tokenizer at `path`. With `reply`, train it to answer every prompt of
    `corpus` with `reply` (greedy decoding then reproduces it); without, it talks garbage."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = _tokenizer(corpus + ([reply] if reply else []))
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(cfg)
    if reply:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        target = tok(" " + reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        prompts = [tok(p + "\nassistant:", add_special_tokens=False)["input_ids"][-window:] for p in corpus]
        model.train()
        for step in range(steps):
            p = prompts[step % len(prompts)]
            ids = torch.tensor([p + target])
            labels = ids.clone()
            labels[0, :len(p)] = -100
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
