"""Cross-attention insertion across LM families: a closed gate is a no-op, an open one conditions on media."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from metamanip.models.lm_injection import condition, find_decoder_layers, inject_cross_attention

VOCAB, MEDIA = 64, 5
FAMILIES = {
    "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=VOCAB, n_positions=32,
                                  bos_token_id=0, eos_token_id=0),
    "llama": lambda: tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                                    num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=32),
    "mpt": lambda: tf.MptConfig(d_model=32, n_heads=2, n_layers=4, vocab_size=VOCAB, max_seq_len=32),
    "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=32),
    "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=2,
                                vocab_size=VOCAB, word_embed_proj_dim=32, max_position_embeddings=32),
}


def _lm(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(FAMILIES[family]()).eval()


def _ids() -> torch.Tensor:
    ids = torch.randint(6, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    ids[:, 2] = MEDIA  # two tokens before the <image> token, four after it
    return ids


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_closed_gates_leave_logits_unchanged_and_open_gates_condition_on_media(family):
    lm = _lm(family)
    ids = _ids()
    with torch.no_grad():
        ref = lm(input_ids=ids).logits
    inject_cross_attention(lm, dim_visual=16, cross_attn_every_n_layers=2, dim_head=8, heads=2, ff_mult=2)
    blocks = [i for i, b in enumerate(lm.gated_cross_attn_layers) if b is not None]
    assert blocks == [1, 3]
    media = torch.randn(2, 1, 3, 16)
    with torch.no_grad(), condition(lm, media, ids == MEDIA):
        closed = lm(input_ids=ids).logits
    torch.testing.assert_close(closed, ref, rtol=0, atol=1e-6)

    for b in lm.gated_cross_attn_layers:  # open the attention gates only
        if b is not None:
            b.attn_gate.data.fill_(1.0)
    with torch.no_grad(), condition(lm, media, ids == MEDIA):
        opened = lm(input_ids=ids).logits
        other = lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    with torch.no_grad(), condition(lm, torch.randn(2, 1, 3, 16), ids == MEDIA):
        other_media = lm(input_ids=ids).logits
    # tokens before <image> see no media; tokens from <image> on do, and depend on which media
    torch.testing.assert_close(opened[:, :2], ref[:, :2], rtol=0, atol=1e-6)
    assert (opened[:, 2:] - ref[:, 2:]).abs().amax() > 1e-3
    assert (other_media[:, 2:] - opened[:, 2:]).abs().amax() > 1e-3
    torch.testing.assert_close(other, opened, rtol=1e-5, atol=1e-5)
    # outside condition() the LM is the plain LM again
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=ids).logits, ref, rtol=0, atol=1e-6)


def test_gradients_reach_cross_attention_through_a_frozen_lm():
    lm = _lm("llama")
    inject_cross_attention(lm, dim_visual=16, cross_attn_every_n_layers=1, dim_head=8, heads=2)
    lm.requires_grad_(False)
    lm.gated_cross_attn_layers.requires_grad_(True)
    for b in lm.gated_cross_attn_layers:
        b.attn_gate.data.fill_(0.5)
    ids = _ids()
    with condition(lm, torch.randn(2, 1, 3, 16), ids == MEDIA):
        lm(input_ids=ids).logits.sum().backward()
    assert all(b.attn.to_q.weight.grad is not None and b.attn.to_q.weight.grad.abs().sum() > 0
               for b in lm.gated_cross_attn_layers)


def test_decoder_layers_are_found_per_family_and_bad_settings_are_named():
    paths = {"gpt2": "transformer.h", "llama": "model.layers", "mpt": "transformer.blocks",
             "gpt_neox": "gpt_neox.layers", "opt": "model.decoder.layers"}
    for family, path in paths.items():
        lm = _lm(family)
        assert find_decoder_layers(lm) is lm.get_submodule(path)
    lm = _lm("gpt2")
    with pytest.raises(ValueError, match="exceeds the LM's 4 layers"):
        inject_cross_attention(lm, dim_visual=8, cross_attn_every_n_layers=5)
    with pytest.raises(ValueError, match="no decoder layers at 'model.layers'"):
        inject_cross_attention(lm, dim_visual=8, decoder_layers_attr="model.layers")
    inject_cross_attention(lm, dim_visual=8, cross_attn_every_n_layers=4, dim_head=4, heads=2)
    with pytest.raises(ValueError, match="inject only once"):
        inject_cross_attention(lm, dim_visual=8)


def test_a_deep_copy_runs_its_own_blocks():
    import copy

    lm = _lm("gpt2")
    inject_cross_attention(lm, dim_visual=16, cross_attn_every_n_layers=2, dim_head=8, heads=2)
    twin = copy.deepcopy(lm)
    for b in twin.gated_cross_attn_layers:
        if b is not None:
            b.attn_gate.data.fill_(1.0)
    ids, media = _ids(), torch.randn(2, 1, 3, 16)
    with torch.no_grad():
        ref = lm(input_ids=ids).logits
        with condition(lm, media, ids == MEDIA):
            closed = lm(input_ids=ids).logits
        with condition(twin, media, ids == MEDIA):
            opened = twin(input_ids=ids).logits
    torch.testing.assert_close(closed, ref, rtol=0, atol=1e-6)  # the original's gates are still closed
    assert (opened - ref).abs().amax() > 1e-3                    # the copy uses its own (open) blocks
