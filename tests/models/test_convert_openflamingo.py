"""Loading MosaicGPT LM weights and OpenFlamingo/RoboFlamingo checkpoints into our module layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import CONF, fake_batch, step_obs, tiny_config
from omegaconf import OmegaConf

from metamanip.models.checkpoint import load_policy
from metamanip.models.convert_openflamingo import (
    COMPONENTS,
    ConversionError,
    check_complete,
    left_at_initial_values,
    load_flamingo_weights,
    load_weight_files,
    main,
)
from metamanip.models.language_model import build_language_model
from metamanip.models.policy import build_policy

MPT = {"model_type": "mpt", "d_model": 32, "n_heads": 2, "n_layers": 2, "max_seq_len": 32, "vocab_size": 64}
# native transformers MPT -> MosaicGPT remote-code names (the inverse of what the converter does)
TO_MOSAIC = [("norm_1.", "ln_1."), ("norm_2.", "ln_2."), ("ffn.up_proj.", "mlp.mlp_up."),
             ("ffn.down_proj.", "mlp.mlp_down."), ("transformer.norm_f.", "transformer.ln_f.")]


def _to_mosaic(key: str) -> str:
    for ours, theirs in TO_MOSAIC:
        key = key.replace(ours, theirs)
    return key


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_mosaic_gpt_weights_load_into_native_mpt_with_qk_layernorm(tmp_path):
    torch.manual_seed(0)
    lm = build_language_model(MPT, qk_layernorm=True).eval()
    _perturb(lm)  # LayerNorms away from identity, so a lost q_ln/k_ln would show
    state = _mpt_state_with_mosaic_names(lm)
    assert any(".attn.q_ln." in k for k in state) and any(".mlp.mlp_up." in k for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")

    loaded = build_language_model(MPT, pretrained=str(tmp_path), weights_format="mosaic_gpt", qk_layernorm=True)
    ids = torch.randint(0, 64, (2, 6))
    torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, lm(input_ids=ids).logits)
    plain = build_language_model(MPT)
    plain.load_state_dict({k: v for k, v in lm.state_dict().items() if "_ln." not in k})
    assert (plain.eval()(input_ids=ids).logits - lm(input_ids=ids).logits).abs().max() > 1e-3

    try:
        build_language_model(MPT, pretrained=str(tmp_path), weights_format="hf", qk_layernorm=True)
    except ValueError as e:
        assert "ln_1" in str(e) or "norm_1" in str(e)
    else:
        raise AssertionError("MosaicGPT keys loaded without renaming")


def _mpt_state_with_mosaic_names(lm) -> dict[str, torch.Tensor]:
    return {_to_mosaic(k): v for k, v in lm.state_dict().items() if k != "lm_head.weight"}


def test_mosaic_gpt_query_key_norms_follow_no_bias(tmp_path):
    torch.manual_seed(0)
    lm = build_language_model(MPT, qk_layernorm=True)  # MPT-1B: no_bias=True, so q_ln/k_ln have no bias
    assert lm.transformer.blocks[0].attn.q_ln.bias is None
    state = _mpt_state_with_mosaic_names(lm)
    assert any(k.endswith("attn.q_ln.weight") for k in state) and not any(k.endswith("q_ln.bias") for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    build_language_model(MPT, pretrained=str(tmp_path), weights_format="mosaic_gpt", qk_layernorm=True)
    with_bias = build_language_model({**MPT, "no_bias": False}, qk_layernorm=True)
    assert with_bias.transformer.blocks[0].attn.q_ln.bias is not None


def test_a_config_that_disagrees_with_the_weights_config_is_refused(tmp_path):
    lm = build_language_model(MPT)
    lm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="n_layers: config 3"):
        build_language_model({**MPT, "n_layers": 3}, pretrained=str(tmp_path))


def _robo_flamingo_file(policy, weights_format: str, head_in_lang_encoder: bool) -> dict:
    """A policy's weights as RoboFlamingo's released .pth holds them: `{'model_state_dict': ...}` with the
    trainable tensors under `module.`, both copies of the cross-attention (the ModuleList and the
    FlamingoLayer wrapper's), the frozen decoder blocks under their `old_decoder_blocks` alias, and the
    action head at the top level (MPT, sep_lm_head) or inside `lang_encoder` (Llama without sep_lm_head)."""
    lm = policy.backbone.lang_encoder
    layers = lm.flamingo_decoder_layers_path
    rename = _to_mosaic if weights_format == "mosaic_gpt" else (lambda k: k)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    out = {}
    for key, value in policy.state_dict().items():
        if key.startswith("decoder."):
            head = "lang_encoder.lm_head." if head_in_lang_encoder else "lm_head."
            out["module." + head + key.removeprefix("decoder.")] = value
        elif key.startswith("backbone.lang_encoder."):
            sub = key.removeprefix("backbone.lang_encoder.")
            if m := re.match(r"gated_cross_attn_layers\.(\d+)\.(.*)", sub):
                out[f"module.lang_encoder.{sub}"] = value
                out[f"module.lang_encoder.{layers}.{m[1]}.gated_cross_attn_layer.{m[2]}"] = value
            elif m := re.match(re.escape(layers) + r"\.(\d+)\.(.*)", sub):
                out[f"module.lang_encoder.old_decoder_blocks.{m[1]}.{rename(m[2])}"] = value
            elif key in trainable:
                out["module.lang_encoder." + rename(sub)] = value
        elif key in trainable:
            out["module." + key.removeprefix("backbone.")] = value
    return {"epoch": 4, "model_state_dict": out, "optimizer_state_dict": {}}


@pytest.mark.parametrize("backbone, head_in_lang_encoder", [("flamingo_mpt_3b", False), ("flamingo_llama_9b", True)])
def test_a_robo_flamingo_checkpoint_places_every_tensor(backbone, head_in_lang_encoder, tmp_path):
    cfg = tiny_config(backbone, "lstm")
    weights_format = cfg["backbone"]["lang_encoder"]["weights_format"]
    torch.manual_seed(0)
    source = build_policy(cfg)
    torch.manual_seed(0)
    target = build_policy(cfg)  # same frozen CLIP/LM init, as when both load the same pretrained files
    _perturb(source.decoder)
    _perturb(source.backbone.perceiver)
    lm = source.backbone.lang_encoder
    _perturb(lm.gated_cross_attn_layers)
    _perturb(lm.get_input_embeddings())
    _perturb(lm.get_submodule(lm.flamingo_decoder_layers_path))  # the frozen blocks' old_decoder_blocks alias
    torch.save(_robo_flamingo_file(source, weights_format, head_in_lang_encoder), tmp_path / "rf.pth")
    state = load_weight_files(tmp_path / "rf.pth")
    assert all(k.startswith("module.") for k in state)

    report = load_flamingo_weights(target, state, weights_format)
    n_xattn = sum(1 for k in target.state_dict() if ".gated_cross_attn_layers." in k)
    assert report.unplaced == {} and len(report.aliases) == n_xattn
    assert len(report.loaded) + len(report.aliases) == len(state)
    left = left_at_initial_values(target, set(report.loaded))
    assert all(not left[part] for part in COMPONENTS)
    check_complete(left)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_two_different_tensors_for_one_place_are_refused():
    cfg = tiny_config("flamingo_mpt_3b", "lstm")
    policy = build_policy(cfg)
    state = _robo_flamingo_file(policy, "mosaic_gpt", False)["model_state_dict"]
    key = next(k for k in state if ".gated_cross_attn_layer.attn_gate" in k)
    state[key] = state[key] + 1.0
    with pytest.raises(ConversionError, match="different tensors"):
        load_flamingo_weights(policy, state, "mosaic_gpt")


def test_an_open_flamingo_4b_output_head_lands_in_the_lm_head():
    # OpenFlamingo-4B's file keeps GPT-NeoX's `embed_out` (its save keeps every key naming an embedding);
    # transformers 5 calls that module `lm_head`
    torch.manual_seed(0)
    policy = build_policy(tiny_config("flamingo_rpj_4b", "lstm"))
    head = policy.backbone.lang_encoder.lm_head.weight
    new = torch.randn_like(head)
    report = load_flamingo_weights(policy, {"lang_encoder.embed_out.weight": new}, "hf")
    assert report.loaded == {"backbone.lang_encoder.lm_head.weight": "lang_encoder.embed_out.weight"}
    assert torch.equal(policy.backbone.lang_encoder.lm_head.weight, new)


def _write_tiny(tmp_path, drop: str = "") -> tuple:
    torch.manual_seed(0)
    cfg = {g: OmegaConf.load(CONF / g / f"{name}.yaml") for g, name in
           (("backbone", "tiny"), ("decoder", "lstm"), ("policy", "tiny"))}
    source = build_policy(cfg).eval()
    _perturb(source)
    state = _robo_flamingo_file(source, "hf", False)["model_state_dict"]
    # tiny's LM and vision tower have no pretrained source: the file carries them (as our own checkpoints do)
    for key, value in source.state_dict().items():
        if key.startswith(("backbone.vision_encoder.", "backbone.lang_encoder.")) and "gated_cross" not in key:
            state.setdefault("module." + key.removeprefix("backbone."), value)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    torch.save(state, tmp_path / "rf.pth")
    args = ["--checkpoint", str(tmp_path / "rf.pth"), "--backbone", "tiny", "--decoder", "lstm", "--policy", "tiny",
            "--out", str(tmp_path / "policy.pt")]
    return source, args


def test_converter_cli_writes_a_loadable_policy(tmp_path, capsys):
    source, args = _write_tiny(tmp_path)
    main(args)
    printed = capsys.readouterr().out
    assert "0 keys not placed" in printed and "backbone trainable tensors left at their initial values: 0" in printed
    loaded = load_policy(tmp_path / "policy.pt").eval()
    batch = fake_batch()
    np.testing.assert_allclose(loaded.select_action(step_obs(batch, 0), batch["text"]),
                               source.select_action(step_obs(batch, 0), batch["text"]), atol=1e-6)


def test_converter_refuses_a_file_without_the_resampler_and_writes_nothing(tmp_path, capsys):
    _, args = _write_tiny(tmp_path, drop="module.perceiver.")
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert "resampler" in err and "--allow-initial resampler" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "rf.pth"]  # no policy, no temp file
    main([*args, "--allow-initial", "resampler"])
    assert (tmp_path / "policy.pt").is_file()


def test_converter_reports_keys_it_cannot_place(tmp_path, capsys):
    _, args = _write_tiny(tmp_path)
    state = torch.load(tmp_path / "rf.pth", weights_only=False)
    state["module.normalizer.mean"] = torch.zeros(3)
    torch.save(state, tmp_path / "rf.pth")
    main(args)
    printed = capsys.readouterr().out
    assert "1 keys not placed" in printed and "not placed: module.normalizer.mean" in printed


def test_converter_refuses_cross_attention_it_has_no_place_for(tmp_path, capsys):
    # a file made with cross-attention before every layer, for a preset that has it before every second one
    _, args = _write_tiny(tmp_path)
    state = torch.load(tmp_path / "rf.pth", weights_only=False)
    extra = {k.replace("gated_cross_attn_layers.1.", "gated_cross_attn_layers.0."): v
             for k, v in state.items() if "gated_cross_attn_layers.1." in k}
    torch.save({**state, **extra}, tmp_path / "rf.pth")
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert "no place" in err and "cross_attn_every_n_layers" in err and not (tmp_path / "policy.pt").exists()
