"""Decoders on their own: losses as specified, causality over the window, binning, DDPM/DDIM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, DECODERS
from hydra.utils import instantiate
from omegaconf import OmegaConf

from metamanip.models.decoders.diffusion import DiffusionDecoder
from metamanip.models.decoders.discrete import DiscreteDecoder
from metamanip.models.decoders.gpt import GPTDecoder
from metamanip.models.decoders.lstm import LSTMDecoder


def _decoder(name: str, d: int = 16, window: int = 4, **kw) -> torch.nn.Module:
    cfg = OmegaConf.load(CONF / "decoder" / f"{name}.yaml")
    cfg = OmegaConf.merge(cfg, kw)
    if name == "gpt":
        cfg.n_head = 2
    return instantiate(cfg, in_features=d, window_size=window)


def _actions(b: int, t: int) -> torch.Tensor:
    return torch.cat([torch.rand(b, t, 6) * 2 - 1, torch.randint(0, 2, (b, t, 1)).float() * 2 - 1], dim=-1)


@pytest.mark.parametrize("name", DECODERS)
def test_step_t_depends_on_steps_up_to_t_only(name):
    torch.manual_seed(0)
    dec = _decoder(name, **({"num_layers": 1} if name in ("lstm", "diffusion", "discrete") else {})).eval()
    x = torch.randn(2, 4, 16)
    y = x.clone()
    y[:, 3] += 5.0  # change the last step only
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(dec.predict(x[:, :3], generator=g()), dec.predict(y[:, :3], generator=g()))
    assert dec.predict(x).shape == (2, 7)
    # the per-step representation the action is read from: equal before step 3, different at step 3
    inner = dec.encode if hasattr(dec, "encode") else dec.forward
    hx, hy = inner(x), inner(y)
    torch.testing.assert_close(hx[:, :3], hy[:, :3])
    assert (hx[:, 3] - hy[:, 3]).abs().max() > 1e-4


def test_continuous_loss_is_huber_plus_a_hundredth_bce():
    torch.manual_seed(0)
    dec = LSTMDecoder(in_features=16, window_size=4, hidden_size=8, num_layers=1)
    x, a = torch.randn(3, 4, 16), _actions(3, 4)
    out = dec.loss(x, a)
    arm, logit = dec(x)
    expected = F.huber_loss(arm, a[..., :6]) + 0.01 * F.binary_cross_entropy(logit.sigmoid(), (a[..., 6:] + 1) / 2)
    torch.testing.assert_close(out["loss"], expected)
    assert arm.abs().max() <= 1.0


def test_discrete_bins_round_trip_within_half_a_bin():
    dec = DiscreteDecoder(in_features=8, window_size=2, n_bins=256)
    a = _actions(4, 5)
    back = dec.detokenize(dec.tokenize(a))
    assert (back[..., :6] - a[..., :6]).abs().max() <= 1.0 / 256 + 1e-6
    torch.testing.assert_close(back[..., 6], a[..., 6])
    assert dec.tokenize(torch.full((1, 7), 3.0)).max() == 255 and dec.tokenize(torch.full((1, 7), -3.0)).min() == 0


def test_discrete_and_continuous_decoders_fit_a_mapping():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 16)
    a = torch.cat([torch.tanh(x[..., :6]), torch.where(x[..., 6:7] > 0, 1.0, -1.0)], dim=-1)
    for name, kw in (("discrete", {"n_bins": 32, "hidden_size": 64, "num_layers": 1}), ("fc", {})):
        dec = _decoder(name, window=3, **kw)
        opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
        for _ in range(200):
            loss = dec.loss(x, a)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        err = (dec.eval().predict(x)[:, :6] - a[:, -1, :6]).abs().mean()
        assert err < 0.2, (name, err)


@pytest.mark.slow
def test_diffusion_trains_and_ddim_samples_near_the_conditional_target():
    torch.manual_seed(0)
    dec = DiffusionDecoder(in_features=8, window_size=2, hidden_size=32, num_layers=1, denoiser_width=64,
                           num_train_timesteps=50, num_inference_steps=10)
    x = torch.randn(2, 2, 8)  # two contexts with two different target actions
    a = torch.tensor([[0.5, -0.5, 0.2, 0.0, 0.3, -0.2, 1.0], [-0.6, 0.4, -0.3, 0.1, -0.2, 0.5, -1.0]])
    a = a[:, None].expand(2, 2, 7).contiguous()
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    losses = []
    for _ in range(400):
        loss = dec.loss(x.repeat(8, 1, 1), a.repeat(8, 1, 1))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    dec.eval()
    samples = dec.predict(x.repeat(8, 1, 1), generator=torch.Generator().manual_seed(0))
    err = (samples[:, :6] - a[:, -1, :6].repeat(8, 1)).abs().mean()
    assert err < 0.15, err
    assert (samples[:, 6] == a[:, -1, 6].repeat(8)).float().mean() >= 0.85
    again = dec.predict(x.repeat(8, 1, 1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, again)  # DDIM with eta = 0 is deterministic given the noise


def test_decoder_arguments_are_checked():
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffusionDecoder(in_features=8, window_size=2, num_train_timesteps=10, num_inference_steps=20)
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTDecoder(in_features=16, window_size=2, hidden_size=9, n_head=2)
    with pytest.raises(ValueError, match="built for windows of 4"):
        _decoder("gpt").predict(torch.randn(1, 5, 16))
