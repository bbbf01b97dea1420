"""Policies: a Flamingo-style backbone (`backbone.py`: open_clip ViT `vision.py` -> Perceiver `perceiver.py` ->
gated cross-attention `cross_attention.py` inserted into a transformers LM by `lm_injection.py`) and an action
decoder (`decoders/`), joined in `policy.py` (`build_policy`, `FlamingoPolicy`); `checkpoint.py` saves and loads
them, `convert_openflamingo.py` imports released OpenFlamingo/RoboFlamingo weights."""
