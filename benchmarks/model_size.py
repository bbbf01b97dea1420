"""Model sizes of the real preset (on the meta device: no weights, no memory) and tiny-preset CPU training speed.

- Builds `backbone=flamingo_mpt_3b decoder=lstm policy=default` on the meta device (a stand-in tokenizer of
  GPT-NeoX-20B's size replaces the hub tokenizer) and counts total / trainable parameters per component,
  next to the sizes derived from RoboFlamingo's module dimensions (docs reference, §1.5).
- Trains the `tiny` preset (policy=tiny, 64 px static / 32 px gripper images) for a few steps on CPU per
  decoder and reports samples (windows) per second.

Last line: JSON {"total_params", "trainable_params", "cpu_train_samples_per_s", ...}.

    python benchmarks/model_size.py [--steps 8] [--batch-size 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from metamanip.models.policy import build_policy

CONF = Path(__file__).resolve().parents[1] / "conf"
# RoboFlamingo 3B (mpt_dolly_3b), sizes derived from its module dimensions (reference §1.5)
ROBO_FLAMINGO_3B = {"perceiver": 63.0e6, "cross_attention": 881e6, "decoder": 41e6, "embeddings": 0.1e9}


def _config(backbone: str, decoder: str, policy: str):
    return OmegaConf.create({g: OmegaConf.load(CONF / g / f"{n}.yaml") for g, n in
                             (("backbone", backbone), ("decoder", decoder), ("policy", policy))})


def count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def meta_sizes(backbone: str = "flamingo_mpt_3b", vocab_size: int = 50277) -> dict:
    """Parameter counts of a real preset + the lstm decoder, built on the meta device."""
    cfg = _config(backbone, "lstm", "default")
    cfg.backbone.vision_encoder.pretrained = None
    cfg.backbone.lang_encoder.pretrained = None
    cfg.backbone.tokenizer = {"_target_": "metamanip.models.language_model.stand_in_tokenizer",
                              "vocab_size": vocab_size}
    with torch.device("meta"):
        policy = build_policy(cfg)
    bb = policy.backbone
    xattn = count(bb.lang_encoder.gated_cross_attn_layers)
    parts = {
        "vision_encoder": count(bb.vision_encoder),
        "language_model": count(bb.lang_encoder) - xattn,
        "perceiver": count(bb.perceiver),
        "cross_attention": xattn,
        "embeddings": bb.lang_encoder.get_input_embeddings().weight.numel(),
        "decoder": count(policy.decoder),
    }
    return {"total": count(policy), "trainable": count(policy, trainable=True), "parts": parts}


# DeeR's presets per backbone (conf/early_exit/): DeeR-B and DeeR-S
DEER_PRESETS = {"flamingo_mpt_3b": ("deer_b", "deer_s"), "flamingo_mpt_9b": ("deer_b_9b", "deer_s_9b"),
                "flamingo_llama_9b": ("deer_b_9b", "deer_s_9b")}


def lm_budget(lm: torch.nn.Module, layers: int, seq_len: int, media_tokens: int) -> dict:
    """Peak LM FLOPs per action and LM parameters (decoder layers + their cross-attention blocks, as
    DeeR counts the LLM) for the first `layers` layers."""
    from metamanip.models.early_exit import decoder_layers, lm_flops

    params = sum(count(decoder_layers(lm)[i]) + (count(lm.gated_cross_attn_layers[i])
                                                 if lm.gated_cross_attn_layers[i] is not None else 0)
                 for i in range(layers))
    return {"layers": layers, "peak_lm_gflops": round(lm_flops(lm, layers, seq_len, media_tokens) / 1e9, 3),
            "lm_params": params, "lm_param_gb_fp32": round(params * 4 / 1e9, 3)}


def early_exit_sizes(backbone: str, vocab_size: int, seq_len: int) -> dict:
    """The full LM against DeeR-B / DeeR-S of `backbone` (multi-exit policies built on the meta device)."""
    cfg = _config(backbone, "lstm", "default")
    cfg.backbone.vision_encoder.pretrained = None
    cfg.backbone.lang_encoder.pretrained = None
    cfg.backbone.tokenizer = {"_target_": "metamanip.models.language_model.stand_in_tokenizer",
                              "vocab_size": vocab_size}
    media = int(cfg.backbone.perceiver.num_latents) * (2 if cfg.policy.use_gripper else 1)
    with torch.device("meta"):
        full = build_policy(cfg)
    out = {"full": lm_budget(full.backbone.lang_encoder, len(full.backbone.lang_encoder.gated_cross_attn_layers),
                             seq_len, media)}
    del full
    for preset in DEER_PRESETS[backbone]:
        ee_cfg = cfg.copy()
        ee_cfg.policy.early_exit = OmegaConf.load(CONF / "early_exit" / f"{preset}.yaml")
        ee_cfg.policy.early_exit.pop("defaults", None)
        ee_cfg.policy.early_exit = OmegaConf.merge(OmegaConf.load(CONF / "early_exit" / "deer.yaml"),
                                                   ee_cfg.policy.early_exit)
        with torch.device("meta"):
            pol = build_policy(ee_cfg)
        row = lm_budget(pol.backbone.lang_encoder, pol.max_layer or pol.n_layers, seq_len, media)
        row.update(kept_layers=pol.n_layers, exits=[i + 1 for i in pol.exit_layers],
                   flops_ratio=round(row["peak_lm_gflops"] / out["full"]["peak_lm_gflops"], 4),
                   memory_ratio=round(row["lm_params"] / out["full"]["lm_params"], 4))
        out[preset] = row
        del pol
    return out


def train_speed(decoder: str, steps: int, batch_size: int) -> float:
    torch.manual_seed(0)
    policy = build_policy(_config("tiny", decoder, "tiny")).train()
    t = policy.window_size
    batch = {
        "rgb_static": torch.randint(0, 256, (batch_size, t, 3, 64, 64), dtype=torch.uint8),
        "rgb_gripper": torch.randint(0, 256, (batch_size, t, 3, 32, 32), dtype=torch.uint8),
        "actions": torch.cat([torch.rand(batch_size, t, 6) * 2 - 1,
                              torch.randint(0, 2, (batch_size, t, 1)).float() * 2 - 1], dim=-1),
        "text": ["no reward last trial. explored objects: drawer, slider. episode objects: drawer, slider, led"]
        * batch_size,
    }
    opt = torch.optim.AdamW(policy.param_groups(0.01), lr=1e-4)

    def step() -> None:
        loss = policy(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=12, help="prompt length for the LM FLOPs per action")
    ap.add_argument("--early-exit-only", action="store_true", help="only the early-exit section")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    if args.early_exit_only:
        exits = {name: early_exit_sizes(name, vocab, args.prompt_tokens) for name, vocab in
                 (("flamingo_mpt_3b", 50277), ("flamingo_mpt_9b", 50277), ("flamingo_llama_9b", 32000))}
        print(json.dumps({"early_exit": exits, "prompt_tokens": args.prompt_tokens}))
        return
    sizes = meta_sizes()
    print(f"flamingo_mpt_3b + lstm: {sizes['total'] / 1e9:.3f} B parameters, {sizes['trainable'] / 1e9:.3f} B trainable")
    print(f"{'component':<16}{'ours':>12}{'RoboFlamingo':>14}{'ratio':>8}")
    for name, n in sizes["parts"].items():
        ref = ROBO_FLAMINGO_3B.get(name)
        ref_s, ratio_s = (f"{ref / 1e6:.1f} M", f"{n / ref:.3f}") if ref else ("", "")
        print(f"{name:<16}{n / 1e6:>10.1f} M{ref_s:>14}{ratio_s:>8}")

    larger = {name: meta_sizes(name, vocab) for name, vocab in (("flamingo_mpt_9b", 50277),
                                                                  ("flamingo_llama_9b", 32000))}
    for name, sz in larger.items():
        print(f"{name} + lstm: {sz['total'] / 1e9:.3f} B parameters, {sz['trainable'] / 1e9:.3f} B trainable")

    exits = {name: early_exit_sizes(name, vocab, args.prompt_tokens) for name, vocab in
             (("flamingo_mpt_3b", 50277), ("flamingo_mpt_9b", 50277), ("flamingo_llama_9b", 32000))}
    print(f"early exit (peak LM compute per action, {args.prompt_tokens} prompt tokens; LM = decoder layers + "
          "cross-attention):")
    print(f"{'backbone':<20}{'model':<12}{'layers':>7}{'peak GFLOPs':>13}{'LM params (GB fp32)':>21}{'ratio':>8}")
    for name, rows in exits.items():
        for model, r in rows.items():
            print(f"{name:<20}{model:<12}{r['layers']:>7}{r['peak_lm_gflops']:>13.2f}{r['lm_param_gb_fp32']:>21.2f}"
                  f"{r.get('flops_ratio', 1.0):>8.3f}")

    speeds = {}
    for decoder in ("lstm", "fc", "gpt", "diffusion", "discrete"):
        speeds[decoder] = train_speed(decoder, args.steps, args.batch_size)
        print(f"tiny + {decoder:<10} {speeds[decoder]:7.1f} windows/s (window 4, batch {args.batch_size}, "
              f"{args.threads} thread(s))")

    print(json.dumps({
        "total_params": sizes["total"],
        "trainable_params": sizes["trainable"],
        "trainable_fraction": round(sizes["trainable"] / sizes["total"], 4),
        "params_by_component": sizes["parts"],
        "vs_robo_flamingo": {k: round(sizes["parts"][k] / v, 4) for k, v in ROBO_FLAMINGO_3B.items()},
        "larger_presets": {k: {"total_params": v["total"], "trainable_params": v["trainable"]}
                           for k, v in larger.items()},
        "cpu_train_samples_per_s": round(speeds["lstm"], 2),
        "cpu_train_samples_per_s_by_decoder": {k: round(v, 2) for k, v in speeds.items()},
        "threads": args.threads,
        "early_exit": exits,
    }))


if __name__ == "__main__":
    main()
