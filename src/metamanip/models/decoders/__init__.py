"""Action decoders: pooled backbone features of a window (B, T, d) -> actions.

Every decoder is built as `Decoder(in_features, window_size, **yaml)` and offers
`loss(features, actions (B, T, 7)) -> {"loss": ..., ...}` and
`predict(features, generator=None) -> (B, 7)` (the action for the window's last step, gripper +-1).
Step t's output depends on steps <= t only, so prediction on a history equals training on that window.
"""
