"""Loading MosaicGPT LM weights and OpenFlamingo/RoboFlamingo checkpoints into our module layout."""

from __future__ import annotations

import re

import numpy as np
import torch
from conftest import CONF, fake_batch, step_obs, tiny_config
from omegaconf import OmegaConf

from metamanip.models.checkpoint import load_policy
from metamanip.models.convert_openflamingo import load_flamingo_weights, main
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
    state = {_to_mosaic(k): v for k, v in lm.state_dict().items() if k != "lm_head.weight"}
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


def _robo_flamingo_layout(policy) -> dict[str, torch.Tensor]:
    """A policy's weights under OpenFlamingo/RoboFlamingo names, with their DDP prefix and aliases."""
    out = {}
    for key, value in policy.state_dict().items():
        if key.startswith("decoder."):
            out["module.lm_head." + key.removeprefix("decoder.")] = value
        elif key.startswith("backbone.lang_encoder."):
            sub = key.removeprefix("backbone.lang_encoder.")
            m = re.match(r"gated_cross_attn_layers\.(\d+)\.(.*)", sub)
            if m:
                out[f"module.lang_encoder.{sub}"] = value
                out[f"module.lang_encoder.transformer.blocks.{m[1]}.gated_cross_attn_layer.{m[2]}"] = value
                continue
            m = re.match(r"transformer\.blocks\.(\d+)\.(.*)", sub)
            if m:
                out[f"module.lang_encoder.transformer.blocks.{m[1]}.decoder_layer.{_to_mosaic(m[2])}"] = value
                out[f"module.lang_encoder.old_decoder_blocks.{m[1]}.{_to_mosaic(m[2])}"] = value
                continue
            out["module.lang_encoder." + _to_mosaic(sub)] = value
        else:
            out["module." + key.removeprefix("backbone.")] = value
    return out


def test_a_robo_flamingo_checkpoint_maps_onto_every_tensor():
    torch.manual_seed(0)
    cfg = tiny_config("flamingo_mpt_3b", "lstm")
    source = build_policy(cfg)
    _perturb(source)
    torch.manual_seed(1)
    target = build_policy(cfg)
    report = load_flamingo_weights(target, _robo_flamingo_layout(source), "mosaic_gpt")
    assert report["unexpected"] == [] and report["trainable_not_loaded"] == []
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_converter_cli_writes_a_loadable_policy(tmp_path):
    torch.manual_seed(0)
    cfg = {g: OmegaConf.load(CONF / g / f"{name}.yaml") for g, name in
           (("backbone", "tiny"), ("decoder", "lstm"), ("policy", "tiny"))}
    source = build_policy(cfg).eval()
    _perturb(source)
    torch.save(_robo_flamingo_layout(source), tmp_path / "rf.pth")
    main(["--checkpoint", str(tmp_path / "rf.pth"), "--backbone", "tiny", "--decoder", "lstm",
          "--policy", "tiny", "--lm-weights-format", "hf", "--out", str(tmp_path / "policy.pt")])
    loaded = load_policy(tmp_path / "policy.pt").eval()
    batch = fake_batch()
    np.testing.assert_allclose(loaded.select_action(step_obs(batch, 0), batch["text"]),
                               source.select_action(step_obs(batch, 0), batch["text"]), atol=1e-6)
