"""Load OpenFlamingo / RoboFlamingo checkpoints and MosaicGPT LM weights into metamanip policies.

Usage (see docs/checkpoint_conversion.md):

    python -m metamanip.models.convert_openflamingo --checkpoint OpenFlamingo-3B/checkpoint.pt \
        --backbone flamingo_mpt_3b --decoder lstm --out policy.pt [--robo-flamingo RF.pth]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
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


Renames = tuple[tuple[re.Pattern, str], ...]


def transformers_renames(lm: torch.nn.Module) -> Renames:
    """The plain key renames transformers applies when it loads older files of this LM class (e.g.
    GPT-NeoX's `embed_out.` -> `lm_head.` in transformers 5); our loaders apply them too."""
    try:
        from transformers.conversion_mapping import extract_weight_conversions_for_model
        from transformers.core_model_loading import WeightRenaming
    except ImportError:  # older transformers: no renames
        return ()
    out = []
    for transform in extract_weight_conversions_for_model(lm) or []:
        if type(transform) is WeightRenaming and len(transform.source_patterns) == 1:
            out.append((re.compile(transform.source_patterns[0]), transform.target_patterns[0]))
    return tuple(out)


def rename_lm_key(key: str, weights_format: str = "hf", renames: Renames = ()) -> str:
    """One LM parameter name in the transformers layout of the model built from our config."""
    if weights_format not in LM_WEIGHT_FORMATS:
        raise ValueError(f"weights_format must be one of {LM_WEIGHT_FORMATS}, got '{weights_format}'")
    if weights_format == "mosaic_gpt":
        for pattern, repl in _MOSAIC_GPT_RENAMES:
            key = pattern.sub(repl, key)
    for pattern, repl in renames:
        key = pattern.sub(repl, key)
    return key


def convert_lm_state_dict(
    state: Mapping[str, torch.Tensor], weights_format: str = "hf", renames: Renames = ()
) -> dict[str, torch.Tensor]:
    """Rename an LM state dict into the transformers layout of the model built from our config."""
    return {rename_lm_key(key, weights_format, renames): value for key, value in state.items()}


# the parts of a policy a released checkpoint must supply, and the flag value that lets one start from scratch
COMPONENTS = ("cross_attention", "resampler", "embeddings", "head")
_WRAPPED_XATTN = re.compile(r"^(?P<layers>.+)\.(?P<n>\d+)\.gated_cross_attn_layer\.(?P<rest>.+)$")
_WRAPPED_DECODER = re.compile(r"^(?P<layers>.+)\.(?P<n>\d+)\.decoder_layer\.(?P<rest>.+)$")
_OLD_BLOCKS = re.compile(r"^old_decoder_blocks\.(?P<n>\d+)\.(?P<rest>.+)$")


class ConversionError(ValueError):
    """A checkpoint that would leave the policy different from the released model."""


@dataclass
class ConversionReport:
    """What one checkpoint file did to a policy: every source key is counted in exactly one list."""

    source: str
    loaded: dict[str, str] = field(default_factory=dict)  # policy key -> the source key it came from
    aliases: list[str] = field(default_factory=list)  # source keys identical to a loaded one (OpenFlamingo's copies)
    unplaced: dict[str, str] = field(default_factory=dict)  # source key -> where it would go; not in this policy

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.aliases)} duplicate copies dropped "
               f"(OpenFlamingo's layer-wrapper aliases), {len(self.unplaced)} keys not placed"]
        out += [f"  not placed: {key} (-> {target})" for key, target in list(self.unplaced.items())[:limit]]
        if len(self.unplaced) > limit:
            out.append(f"  ... and {len(self.unplaced) - limit} more")
        return out


def flamingo_key_target(
    key: str, layers_path: str, lm_weights_format: str = "mosaic_gpt", renames: Renames = ()
) -> str:
    """The FlamingoPolicy key an OpenFlamingo / RoboFlamingo key belongs to.

    - `module.` (DDP) prefixes are stripped; `vision_encoder.*`, `perceiver.*`, `perceiver_gripper.*` ->
      `backbone.*`;
    - cross-attention: `lang_encoder.gated_cross_attn_layers.N.*` and the copy OpenFlamingo's FlamingoLayer
      wrapper registers, `lang_encoder.<decoder layers>.N.gated_cross_attn_layer.*` (the only copy
      OpenFlamingo's save keeps) -> `backbone.lang_encoder.gated_cross_attn_layers.N.*`;
    - decoder blocks: `<decoder layers>.N.decoder_layer.*` and `old_decoder_blocks.N.*` ->
      `backbone.lang_encoder.<layers_path>.N.*`, renamed with `rename_lm_key`; other LM keys renamed too;
    - RoboFlamingo's action head -> `decoder.*`: `lm_head.*` (MPT, sep_lm_head) or, for a Llama-style model
      without sep_lm_head, `lang_encoder.lm_head.<module>.*` (the LM's own `lm_head.weight/bias` stay LM keys).
    """
    key = key.removeprefix("module.")
    if key.startswith(("vision_encoder.", "perceiver.", "perceiver_gripper.")):
        return f"backbone.{key}"
    if key.startswith("lm_head."):
        return f"decoder.{key.removeprefix('lm_head.')}"
    if not key.startswith("lang_encoder."):
        return key  # not a Flamingo key: reported as not placed unless the policy has it
    sub = key.removeprefix("lang_encoder.")
    if sub.startswith("gated_cross_attn_layers."):
        return f"backbone.lang_encoder.{sub}"
    if m := _WRAPPED_XATTN.match(sub):
        return f"backbone.lang_encoder.gated_cross_attn_layers.{m['n']}.{m['rest']}"
    if sub.startswith("lm_head.") and sub.count(".") > 1:
        return f"decoder.{sub.removeprefix('lm_head.')}"
    if m := _OLD_BLOCKS.match(sub):
        sub = f"{layers_path}.{m['n']}.{m['rest']}"
    elif m := _WRAPPED_DECODER.match(sub):
        sub = f"{m['layers']}.{m['n']}.{m['rest']}"
    return f"backbone.lang_encoder.{rename_lm_key(sub, lm_weights_format, renames)}"


def convert_flamingo_state_dict(
    state: Mapping[str, torch.Tensor], layers_path: str, lm_weights_format: str = "mosaic_gpt", renames: Renames = ()
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Rename every key (`flamingo_key_target`); returns (policy key -> tensor, policy key -> source key,
    source keys that were identical copies of another). Two different tensors for one place are an error."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    aliases: list[str] = []
    for key, value in state.items():
        target = flamingo_key_target(key, layers_path, lm_weights_format, renames)
        if target in out:
            if tuple(out[target].shape) != tuple(value.shape) or not torch.equal(out[target], value):
                raise ConversionError(
                    f"'{key}' and '{origin[target]}' both belong at '{target}' but hold different tensors; "
                    "the file is not a consistent OpenFlamingo/RoboFlamingo checkpoint"
                )
            aliases.append(key)
            continue
        out[target], origin[target] = value, key
    return out, origin, aliases


def load_flamingo_weights(
    policy: torch.nn.Module, state: Mapping[str, torch.Tensor], lm_weights_format: str, source: str = "checkpoint"
) -> ConversionReport:
    """Copy every tensor of an OpenFlamingo / RoboFlamingo state dict into its place in `policy`.

    A shape mismatch stops with the key named; keys with no place are listed in the report."""
    lm = policy.backbone.lang_encoder
    converted, origin, aliases = convert_flamingo_state_dict(
        state, lm.flamingo_decoder_layers_path, lm_weights_format, transformers_renames(lm)
    )
    own = policy.state_dict()
    report = ConversionReport(source=source, aliases=sorted(aliases))
    for key, value in converted.items():
        if key not in own:
            report.unplaced[origin[key]] = key
        elif tuple(own[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"'{origin[key]}' -> '{key}': checkpoint shape {tuple(value.shape)} != policy shape "
                f"{tuple(own[key].shape)}; check the backbone preset (LM size, cross_attn_every_n_layers, vocabulary)"
            )
        else:
            report.loaded[key] = origin[key]
    report.unplaced = dict(sorted(report.unplaced.items()))
    policy.load_state_dict({k: converted[k] for k in report.loaded}, strict=False)
    return report


def component_of(name: str) -> str:
    """The component a policy key belongs to by its name (COMPONENTS or "other"; embeddings are found by
    identity in `trainable_components`, their name depends on the LM)."""
    if ".gated_cross_attn_layers." in name:
        return "cross_attention"
    if name.startswith(("backbone.perceiver.", "backbone.perceiver_gripper.")):
        return "resampler"
    if name.startswith("decoder."):
        return "head"
    return "other"


def trainable_components(policy: torch.nn.Module) -> dict[str, list[str]]:
    """Trainable parameter names of the policy by component (COMPONENTS, plus "other")."""
    from metamanip.models.language_model import input_embeddings

    embedding = input_embeddings(policy.backbone.lang_encoder).weight
    parts: dict[str, list[str]] = {name: [] for name in (*COMPONENTS, "other")}
    for name, p in policy.named_parameters():
        if not p.requires_grad:
            continue
        parts["embeddings" if p is embedding else component_of(name)].append(name)
    return parts


def left_at_initial_values(policy: torch.nn.Module, loaded: set[str]) -> dict[str, list[str]]:
    """Trainable tensors, by component, that no checkpoint set (tied copies count as set)."""
    own = policy.state_dict(keep_vars=True)
    loaded_ids = {id(own[k]) for k in loaded if k in own}
    return {part: [n for n in names if n not in loaded and id(own[n]) not in loaded_ids]
            for part, names in trainable_components(policy).items()}


def check_complete(
    left: Mapping[str, list[str]], allow_initial: set[str] = frozenset(), unplaced: Mapping[str, str] | None = None
) -> None:
    """Refuse a conversion that leaves cross-attention, resampler, embeddings or head at initial values, or
    whose files hold cross-attention, resampler or head tensors the policy has no place for."""
    extra = {src: dst for src, dst in (unplaced or {}).items() if component_of(dst) != "other"}
    if extra:
        src, dst = next(iter(extra.items()))
        raise ConversionError(
            f"the checkpoint(s) hold {len(extra)} cross-attention/resampler/head tensors this policy has no place "
            f"for (e.g. '{src}' -> '{dst}'): the backbone preset does not describe the file; check "
            "cross_attn_every_n_layers, the LM's depth, sep_resampler and the decoder"
        )
    bad = {part: names for part, names in left.items() if names and part in COMPONENTS and part not in allow_initial}
    if bad:
        parts = ", ".join(f"{part} ({len(names)} tensors, e.g. {names[0]})" for part, names in bad.items())
        raise ConversionError(
            f"the checkpoint(s) leave trainable tensors at their initial values: {parts}. The policy would "
            "not be the released model. Check that the file matches the backbone preset (LM family, "
            "cross_attn_every_n_layers, lm-weights-format) or add the file that holds them (--robo-flamingo for "
            "the action head); to start those parts from scratch on purpose pass "
            + " ".join(f"--allow-initial {part}" for part in bad)
        )


def main(argv: list[str] | None = None) -> None:
    """CLI: build a policy from conf/ presets, load OpenFlamingo (+ RoboFlamingo) weights, save a checkpoint."""
    from hydra import compose, initialize_config_dir

    from metamanip.models.checkpoint import save_policy
    from metamanip.models.policy import build_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="OpenFlamingo checkpoint.pt (Perceiver, xattn, embeddings)")
    parser.add_argument("--robo-flamingo", default=None, help="RoboFlamingo .pth loaded on top (adds the action head)")
    parser.add_argument("--backbone", default="flamingo_mpt_3b")
    parser.add_argument("--decoder", default="lstm")
    parser.add_argument("--policy", default="default")
    parser.add_argument("--lm-weights-format", default=None, choices=LM_WEIGHT_FORMATS,
                        help="LM key layout in the files (default: the preset's lang_encoder.weights_format)")
    parser.add_argument("--allow-initial", action="append", default=[], choices=COMPONENTS,
                        help="let this part keep its initial values (e.g. head: fine-tune from OpenFlamingo alone)")
    parser.add_argument("--conf-dir", default=str(Path(__file__).resolve().parents[3] / "conf"))
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. backbone.lang_encoder.pretrained=/path")
    args = parser.parse_args(argv)
    if not (args.checkpoint or args.robo_flamingo):
        parser.error("give --checkpoint (OpenFlamingo) and/or --robo-flamingo (RoboFlamingo .pth)")
    logging.basicConfig(level=logging.INFO)

    overrides = [f"+backbone={args.backbone}", f"+decoder={args.decoder}", f"+policy={args.policy}", *args.overrides]
    with initialize_config_dir(config_dir=str(Path(args.conf_dir).resolve()), version_base=None):
        cfg = compose(config_name=None, overrides=overrides)
    weights_format = args.lm_weights_format or cfg.backbone.lang_encoder.get("weights_format") or "hf"
    policy = build_policy(cfg)
    loaded: set[str] = set()
    unplaced: dict[str, str] = {}
    try:
        for path in filter(None, [args.checkpoint, args.robo_flamingo]):
            report = load_flamingo_weights(policy, load_weight_files(Path(path)), weights_format, source=str(path))
            print("\n".join(report.lines()))
            loaded |= set(report.loaded)
            unplaced.update(report.unplaced)
        left = left_at_initial_values(policy, loaded)
        totals = trainable_components(policy)
        for part, names in totals.items():
            if names:
                print(f"  {part}: {len(names) - len(left[part])}/{len(names)} trainable tensors loaded")
        n_backbone = sum(len(left[part]) for part in COMPONENTS if part != "head")
        print(f"backbone trainable tensors left at their initial values: {n_backbone}")
        if left["head"]:
            allowed = " (allowed by --allow-initial head)" if "head" in args.allow_initial else ""
            print(f"head tensors left at their initial values: {len(left['head'])}{allowed}")
        check_complete(left, set(args.allow_initial), unplaced)
    except ConversionError as exc:
        print(f"error: {exc}\nnothing written to {args.out}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(f"saved {save_policy(policy, args.out)}")


if __name__ == "__main__":
    main()
