"""Load OpenFlamingo / RoboFlamingo checkpoints and MosaicGPT LM weights into metamanip policies.

Usage (see docs/checkpoint_conversion.md):

    python -m metamanip.models.convert_openflamingo --checkpoint OpenFlamingo-3B/checkpoint.pt \
        --backbone flamingo_mpt_3b --decoder lstm --out policy.pt [--robo-flamingo RF.pth]
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# MosaicGPT remote code (mpt-1b-redpajama-200b*) -> native transformers MPT names
_MOSAIC_GPT_RENAMES = [
    (re.compile(r"(^|\.)ln_1\."), r"\1norm_1."),
    (re.compile(r"(^|\.)ln_2\."), r"\1norm_2."),
    (re.compile(r"(^|\.)mlp\.mlp_up\."), r"\1ffn.up_proj."),
    (re.compile(r"(^|\.)mlp\.mlp_down\."), r"\1ffn.down_proj."),
    (re.compile(r"(^|\.)transformer\.ln_f\."), r"\1transformer.norm_f."),
]
LM_WEIGHT_FORMATS = ("hf", "mosaic_gpt")


def load_weight_files(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weight file, or of every *.safetensors / *.bin / *.pt file in a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pt"))
    else:
        files = [path] if path.exists() else []
    if not files:
        raise FileNotFoundError(
            f"no weights at {path} (expected a .safetensors/.bin/.pt file or a directory holding them); "
            "download the model first or point `pretrained` at the local copy"
        )
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(f)))
        else:
            obj = torch.load(f, map_location="cpu", weights_only=False)
            for key in ("model_state_dict", "state_dict", "model"):
                if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
                    obj = obj[key]
                    break
            state.update(obj)
    return state


def rename_lm_key(key: str, weights_format: str = "hf") -> str:
    """One LM parameter name in the transformers layout of the model built from our config."""
    if weights_format not in LM_WEIGHT_FORMATS:
        raise ValueError(f"weights_format must be one of {LM_WEIGHT_FORMATS}, got '{weights_format}'")
    if weights_format == "mosaic_gpt":
        for pattern, repl in _MOSAIC_GPT_RENAMES:
            key = pattern.sub(repl, key)
    return key


def convert_lm_state_dict(state: Mapping[str, torch.Tensor], weights_format: str = "hf") -> dict[str, torch.Tensor]:
    """Rename an LM state dict into the transformers layout of the model built from our config."""
    return {rename_lm_key(key, weights_format): value for key, value in state.items()}


def convert_flamingo_state_dict(
    state: Mapping[str, torch.Tensor], lm_weights_format: str = "mosaic_gpt"
) -> dict[str, torch.Tensor]:
    """OpenFlamingo / RoboFlamingo keys -> FlamingoPolicy keys.

    - `module.` (DDP) prefixes are stripped;
    - `vision_encoder.*`, `perceiver.*`, `perceiver_gripper.*` -> `backbone.*`;
    - `lang_encoder.gated_cross_attn_layers.*` kept; the aliases OpenFlamingo's FlamingoLayer wrapper adds
      (`...gated_cross_attn_layer.*`, `old_decoder_blocks.*`) are dropped, `.decoder_layer.` is unwrapped;
    - other LM keys are renamed with `convert_lm_state_dict`;
    - RoboFlamingo's action head `lm_head.*` -> `decoder.*` (rnn, actions.mlp, gripper.mlp match LSTMDecoder).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(("vision_encoder.", "perceiver.", "perceiver_gripper.")):
            out[f"backbone.{key}"] = value
        elif key.startswith("lang_encoder."):
            sub = key.removeprefix("lang_encoder.")
            if ".gated_cross_attn_layer." in sub or sub.startswith("old_decoder_blocks."):
                continue
            if not sub.startswith("gated_cross_attn_layers."):
                sub = rename_lm_key(sub.replace(".decoder_layer.", "."), lm_weights_format)
            out[f"backbone.lang_encoder.{sub}"] = value
        elif key.startswith("lm_head."):
            out[f"decoder.{key.removeprefix('lm_head.')}"] = value
        else:
            log.warning("dropping unrecognised checkpoint key %s", key)
    return out


def load_flamingo_weights(policy: torch.nn.Module, state: Mapping[str, torch.Tensor], lm_weights_format: str) -> dict:
    """Copy matching tensors into `policy`; shape mismatches name the key. Returns what was and was not set."""
    converted = convert_flamingo_state_dict(state, lm_weights_format)
    own = policy.state_dict()
    unexpected = sorted(k for k in converted if k not in own)
    for key, value in converted.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"'{key}': checkpoint shape {tuple(value.shape)} != policy shape {tuple(own[key].shape)}")
    loadable = {k: v for k, v in converted.items() if k in own}
    policy.load_state_dict(loadable, strict=False)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    not_loaded = sorted(n for n in trainable if n not in loadable)
    return {"loaded": sorted(loadable), "unexpected": unexpected, "trainable_not_loaded": not_loaded}


def main(argv: list[str] | None = None) -> None:
    """CLI: build a policy from conf/ presets, load OpenFlamingo (+ RoboFlamingo) weights, save a checkpoint."""
    from hydra import compose, initialize_config_dir

    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="OpenFlamingo checkpoint.pt (Perceiver, xattn, embeddings)")
    parser.add_argument("--robo-flamingo", default=None, help="optional RoboFlamingo .pth loaded on top (action head)")
    parser.add_argument("--backbone", default="flamingo_mpt_3b")
    parser.add_argument("--decoder", default="lstm")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--lm-weights-format", default="mosaic_gpt", choices=LM_WEIGHT_FORMATS)
    parser.add_argument("--conf-dir", default=str(Path(__file__).resolve().parents[3] / "conf"))
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. backbone.lang_encoder.pretrained=/path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    overrides = [f"+backbone={args.backbone}", f"+decoder={args.decoder}", f"+policy={args.policy}", *args.overrides]
    with initialize_config_dir(config_dir=str(Path(args.conf_dir).resolve()), version_base=None):
        cfg = compose(config_name=None, overrides=overrides)
    policy = build_policy(cfg)
    report: dict = {}
    for path in filter(None, [args.checkpoint, args.robo_flamingo]):
        report = load_flamingo_weights(policy, load_weight_files(Path(path)), args.lm_weights_format)
        print(f"{path}: loaded {len(report['loaded'])} tensors, {len(report['unexpected'])} unexpected")
        for key in report["unexpected"][:20]:
            print(f"  unexpected: {key}")
    if report["trainable_not_loaded"]:
        print(f"trainable tensors left at their initial values: {len(report['trainable_not_loaded'])}")
        for key in report["trainable_not_loaded"][:20]:
            print(f"  {key}")
    print(f"saved {save_policy(policy, args.out)}")


if __name__ == "__main__":
    main()
