"""Checkpoints made by the real OpenFlamingo package (PyPI open-flamingo 2.0.1) convert and run identically.

Each test builds OpenFlamingo at a tiny size with OpenFlamingo's own factory, from a local open_clip model
config and a tiny `save_pretrained` language model of one LM family the presets use, saves its trainable state
with OpenFlamingo's own `save_checkpoint` (which keeps only the `<decoder layers>.N.gated_cross_attn_layer.*`
copy of the cross-attention), converts it with the metamanip CLI and compares the LM outputs of both models
on the same images and text, with every gate non-zero.

open-flamingo is a test dependency installed without its pins (`make install`; it pins torch 2.0.1). It runs
unchanged on our torch / transformers / open_clip. One difference is emulated here: OpenFlamingo was trained
on open_clip 2.20, whose ViT returns its patch tokens before `ln_post`; open_clip 3.x applies `ln_post` first
unless the model config sets `final_ln_after_pool`, so the test config sets it (the 2.20 behaviour, which
metamanip reproduces by reading the tokens before `ln_post`).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
import transformers
import yaml
from conftest import CONF
from tokenizers import Tokenizer, models, pre_tokenizers

from metamanip.models.checkpoint import load_policy
from metamanip.models.convert_openflamingo import main as convert
from metamanip.models.lm_injection import condition

try:
    from open_flamingo import create_model_and_transforms
    from open_flamingo.train.train_utils import save_checkpoint
except ImportError as exc:  # pragma: no cover - the install step provides it
    raise ImportError(
        "open-flamingo is a test dependency: run `make install`, or "
        "`pip install --no-deps open-flamingo==2.0.1 einops einops-exts`"
    ) from exc

CLIP_NAME = "metamanip-peer-vit"
CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,  # as OpenAI's weights (open_clip 2.20's load_openai_model builds QuickGELU)
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16,
                   "final_ln_after_pool": True},  # patch tokens before ln_post, as open_clip 2.20 returned them
    "text_cfg": {"context_length": 4, "vocab_size": 16, "width": 32, "heads": 2, "layers": 1},
}
VOCAB = 100
# (LM config, cross_attn_every_n_layers): each LM family of the presets, with a different xattn spacing
FAMILIES = {
    "mpt": ({"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 64,
             "vocab_size": VOCAB, "no_bias": True}, 1),
    "gpt_neox": ({"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                  "num_attention_heads": 4, "max_position_embeddings": 64, "vocab_size": VOCAB,
                  "use_parallel_residual": False, "tie_word_embeddings": False}, 2),
    "llama": ({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64,
               "vocab_size": VOCAB}, 4),
}
TEXTS = ["w5 w6 w7 w8 w9", "w11 w12"]  # different lengths: the batch is padded


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="w1", unk_token="w0")


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("clip")
    (tmp / f"{CLIP_NAME}.json").write_text(json.dumps(CLIP_CFG))
    open_clip.add_model_config(tmp / f"{CLIP_NAME}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME)
    torch.save(clip.state_dict(), tmp / "clip.pt")
    return tmp / "clip.pt"


def _open_flamingo(tmp: Path, family: str, clip_weights: Path):
    """OpenFlamingo built by its factory, trainable parts randomised, gates non-zero, saved by its trainer."""
    lm_config, every = FAMILIES[family]
    torch.manual_seed(1)
    lm = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**lm_config))
    lm.save_pretrained(tmp / "lm")
    _tokenizer().save_pretrained(tmp / "lm")
    model, _, tokenizer = create_model_and_transforms(
        CLIP_NAME, str(clip_weights), str(tmp / "lm"), str(tmp / "lm"),
        cross_attn_every_n_layers=every, use_local_files=True,
    )
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
        for block in model.lang_encoder.gated_cross_attn_layers:
            if block is not None:
                block.attn_gate.fill_(0.7)
                block.ff_gate.fill_(-0.4)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    args = SimpleNamespace(fsdp=False, rank=0, run_name=str(tmp / "run"), report_to_wandb=False,
                           save_checkpoints_to_wandb=False, delete_previous_checkpoint=False)
    save_checkpoint(model, optimizer, scheduler, 0, args)
    return model, tokenizer, tmp / "run" / "checkpoint_0.pt"


def _conf_dir(tmp: Path, family: str, clip_weights: Path) -> Path:
    """A conf/ dir whose `peer` backbone describes the OpenFlamingo model above (real presets' settings)."""
    lm_config, every = FAMILIES[family]
    backbone = yaml.safe_load((CONF / "backbone" / "flamingo_mpt_9b.yaml").read_text())
    backbone["vision_encoder"] = {"_target_": "metamanip.models.vision.build_vision_encoder",
                                  "model_name": CLIP_NAME, "pretrained": str(clip_weights)}
    backbone["lang_encoder"] = {"_target_": "metamanip.models.language_model.build_language_model",
                                "pretrained": str(tmp / "lm"), "weights_format": "hf", "config": lm_config}
    backbone["tokenizer"] = {"_target_": "metamanip.models.language_model.pretrained_tokenizer",
                             "path": str(tmp / "lm")}
    backbone["cross_attn_every_n_layers"] = every
    conf = tmp / "conf"
    for group, name, node in (("backbone", "peer", backbone),
                              ("decoder", "lstm", yaml.safe_load((CONF / "decoder" / "lstm.yaml").read_text())),
                              ("policy", "peer", {"window_size": 2, "use_gripper": False})):
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(yaml.safe_dump(node))
    return conf


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_open_flamingo_checkpoint_converts_to_the_same_model(family, clip_weights, tmp_path, capsys):
    of_model, of_tokenizer, ckpt = _open_flamingo(tmp_path, family, clip_weights)
    state = torch.load(ckpt, weights_only=False)["model_state_dict"]
    # OpenFlamingo's save keeps only the wrapper's copy of the cross-attention: the converter must place it
    assert not any(k.startswith("lang_encoder.gated_cross_attn_layers.") for k in state)
    assert any(".gated_cross_attn_layer.attn_gate" in k for k in state)

    conf = _conf_dir(tmp_path, family, clip_weights)
    out = tmp_path / "policy.pt"
    common = ["--checkpoint", str(ckpt), "--backbone", "peer", "--decoder", "lstm", "--policy", "peer",
              "--conf-dir", str(conf), "--out", str(out)]
    with pytest.raises(SystemExit):  # an OpenFlamingo file has no action head: refused unless asked for
        convert(common)
    assert "--allow-initial head" in capsys.readouterr().err and not out.exists()
    convert([*common, "--allow-initial", "head"])
    printed = capsys.readouterr().out
    with capsys.disabled():  # the converter's report, shown with `pytest -s`
        print(f"\n[{family}]\n{printed}")
    assert "backbone trainable tensors left at their initial values: 0" in printed
    assert f"{len(state)} tensors loaded" in printed and "0 keys not placed" in printed

    policy = load_policy(out).eval()
    bb = policy.backbone
    ids, mask = bb.tokenize(TEXTS)
    assert of_tokenizer.convert_tokens_to_ids("<image>") == bb.media_token_id
    assert of_tokenizer(["<image>w5 w6<|endofchunk|>w1"])["input_ids"][0] == bb.tokenize(["w5 w6"])[0][0].tolist()
    assert (mask == 0).any()  # a padded batch
    images = torch.randn(len(TEXTS), 3, 16, 16, generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        of_model._encode_vision_x(images[:, None, None])
        theirs = of_model.lang_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        of_model.lang_encoder.clear_conditioned_layers()
        vis = bb.encode_vision(images)
        with condition(bb.lang_encoder, vis, ids == bb.media_token_id):
            ours = bb.lang_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        features = bb(images, None, ids, mask)
        with condition(bb.lang_encoder, torch.zeros_like(vis), ids == bb.media_token_id):
            blind = bb.lang_encoder(input_ids=ids, attention_mask=mask, use_cache=False).logits

    # an untied output head (LLaMA; GPT-NeoX, named lm_head in transformers 5) is frozen and not in
    # OpenFlamingo's file: its rows for the added tokens are random on both sides, so the comparison covers
    # the original vocabulary there (MPT's head is the tied, saved embedding: every column)
    cols = theirs.logits.shape[-1] if family == "mpt" else VOCAB
    logits_diff = (ours.logits[..., :cols] - theirs.logits[..., :cols]).abs().max().item()
    hidden_diff = max((a - b).abs().max().item() for a, b in zip(ours.hidden_states, theirs.hidden_states))
    with capsys.disabled():
        print(f"{family}: max |logits diff| {logits_diff:.2e}, max |hidden diff| {hidden_diff:.2e}")
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    assert logits_diff < 1e-4 and hidden_diff < 1e-4
    torch.testing.assert_close(features, theirs.hidden_states[-1], atol=1e-4, rtol=0)
    assert (blind[..., :cols] - theirs.logits[..., :cols]).abs().max() > 1e-2  # the image matters
