"""Schedules, the forward process, the loss, the samplers and the attention, pinned with numbers."""

from __future__ import annotations

import math

import pytest
import torch

from palette_cli import diffusion as D
from palette_cli import samplers as S
from palette_cli import seeds
from palette_cli.checkpoint import build_network
from palette_cli.tasks.colorize import to_gray
from palette_cli.config import PAPER_SAMPLE_SCHEDULE, PRESETS, TRAIN_SCHEDULE, ModelConfig, ScheduleConfig
from palette_cli.unet import AttentionBlock, gamma_embedding

from conftest import randomize


def test_linear_schedule_matches_hand_computed_values():
    b = D.betas(TRAIN_SCHEDULE)
    g = D.gammas(TRAIN_SCHEDULE)
    step = (1e-2 - 1e-6) / 1999
    assert b.shape == (2000,) and b.dtype == torch.float64
    assert b[0].item() == pytest.approx(1e-6, rel=1e-12)
    assert b[1].item() == pytest.approx(1e-6 + step, rel=1e-12)
    assert b[-1].item() == pytest.approx(1e-2, rel=1e-12)
    assert g[1].item() == pytest.approx((1 - 1e-6) * (1 - 1e-6 - step), rel=1e-12)
    # Paper's inference schedule: 1000 steps 1e-4..0.09 ends at essentially pure noise.
    gp = D.gammas(PAPER_SAMPLE_SCHEDULE)
    assert gp[0].item() == pytest.approx(1 - 1e-4)
    assert gp[-1].item() < 1e-19
    assert torch.all(gp[1:] < gp[:-1])


def test_cosine_schedule_matches_formula():
    sched = ScheduleConfig(kind="cosine", num_steps=10)
    g = D.gammas(sched)
    s = 8e-3

    def f(t):
        return math.cos((t / 10 + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 4, 8):  # the last step's beta is clipped at 0.999, the others are exact
        assert g[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_q_sample_statistics_and_predict_x0_inverts_it():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((4, 3, 64, 64), 0.8)
    noise = torch.randn(x0.shape, generator=gen)
    gamma = torch.tensor([0.25, 0.5, 0.9, 0.99])
    x_t = D.q_sample(x0, gamma, noise)
    for i, g in enumerate(gamma.tolist()):
        assert x_t[i].mean().item() == pytest.approx(math.sqrt(g) * 0.8, abs=0.02)
        assert x_t[i].std().item() == pytest.approx(math.sqrt(1 - g), rel=0.03)
    assert torch.allclose(D.predict_x0(x_t, gamma, noise), x0, atol=1e-5)
    assert torch.allclose(D.predict_eps(x_t, gamma, x0), noise, atol=1e-4)


def test_training_gamma_lies_between_neighbouring_steps():
    g = D.gammas(TRAIN_SCHEDULE)
    samples = D.sample_train_gamma(g, 10000, torch.Generator().manual_seed(0))
    assert samples.min() >= g[-1].item() - 1e-7 and samples.max() <= 1.0
    # Continuous: almost no two samples are equal, unlike discrete timesteps.
    assert len(torch.unique(samples)) > 9900


class PointMass(torch.nn.Module):
    """The exact denoiser when all data is one image x_star, answering in any objective."""

    def __init__(self, x_star: torch.Tensor, objective: str = "eps"):
        super().__init__()
        self.x_star, self.objective = x_star, objective

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        x_t, x0 = x[:, 3:], self.x_star.expand_as(x[:, 3:])
        return D.prediction_target(self.objective, x0, D.predict_eps(x_t, gamma, x0), gamma)


class Gaussian(torch.nn.Module):
    """The exact eps-denoiser for data ~ N(0, s^2 I): E[eps | x_t] = sqrt(1-g) x_t / (g s^2 + 1 - g)."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        g = gamma.reshape(-1, 1, 1, 1).double()
        x_t = x[:, 3:].double()
        return ((1 - g).sqrt() * x_t / (g * self.s**2 + 1 - g)).float()


def algorithm2_by_hand(network, cond, gammas, seed):
    """Palette's Algorithm 2, written out literally, drawing noise as the samplers do."""
    gens = [seeds.generator(seed, k) for k in range(cond.shape[0])]
    g = gammas.double()
    y = S.randn_like_per_sample(cond, gens)
    for t in reversed(range(len(g))):
        alpha = (g[t] / (g[t - 1] if t > 0 else 1.0)).item()
        eps = network(torch.cat([cond, y], 1), torch.full((cond.shape[0],), g[t].item()))
        y = (y - (1 - alpha) / math.sqrt(1 - g[t].item()) * eps) / math.sqrt(alpha)
        if t > 0:
            y = y + math.sqrt(1 - alpha) * S.randn_like_per_sample(y, gens)
    return y


def test_ddpm_reproduces_algorithm_2_on_an_analytic_denoiser():
    net = Gaussian(0.5)
    cond = torch.zeros(2, 3, 16, 16)
    g = D.gammas(PAPER_SAMPLE_SCHEDULE)
    ours = S.ddpm(net, cond, g, steps=1000, generators=[seeds.generator(7, k) for k in range(2)],
                  clip=False)
    ref = algorithm2_by_hand(net, cond, g, seed=7)
    assert torch.allclose(ours, ref.clamp(-1, 1), atol=1e-4)
    # And it samples the data distribution: std 0.5 (clamping at +-1 is 2 sigma, a small effect).
    assert ours.std().item() == pytest.approx(0.5, rel=0.08)


def test_respaced_ddpm_with_all_steps_is_the_full_one():
    g = D.gammas(ScheduleConfig("linear", 50, 1e-4, 0.3))
    assert torch.equal(S.respace(g, 50), g)
    assert len(S.respace(g, 7)) == 7 and S.respace(g, 7)[-1] == g[-1]
    net = Gaussian(0.4)
    cond = torch.zeros(1, 3, 8, 8)
    full = S.ddpm(net, cond, g, steps=50, generators=[seeds.generator(1, 0)], clip=False)
    ref = algorithm2_by_hand(net, cond, g, seed=1)
    assert torch.allclose(full, ref.clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("residual, strength", [(False, 1.0), (True, 1.0), (False, 0.5), (True, 0.3)])
def test_samplers_recover_the_point_mass_and_keep_known_pixels(sampler, objective, residual, strength):
    x_star = torch.rand(1, 3, 16, 16) * 1.6 - 0.8
    cond = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    base = D.residual_base(cond, mask)
    oracle = PointMass(x_star - base if residual else x_star, objective)
    out = S.sample(oracle, cond, D.gammas(TRAIN_SCHEDULE), sampler=sampler, steps=20,
                   generators=[seeds.generator(0, k) for k in range(2)], mask=mask,
                   objective=objective, residual=residual, strength=strength)
    inside = mask.expand_as(out).bool()
    assert torch.allclose(out[inside], x_star.expand_as(out)[inside], atol=1e-4)
    assert torch.equal(out[~inside], cond[~inside])  # pasted exactly, bit for bit


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_objective_conversions_are_exact(objective):
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 8, 8, generator=gen), torch.randn(3, 3, 8, 8, generator=gen)
    gamma = torch.tensor([0.01, 0.5, 0.99])
    x_t = D.q_sample(x0, gamma, eps)
    target = D.prediction_target(objective, x0, eps, gamma)
    got_x0, got_eps = D.split_prediction(target, x_t, gamma, objective)
    assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, eps, atol=1e-4)
    if objective == "v":  # v = sqrt(g) eps - sqrt(1 - g) x0, by definition
        g = gamma.reshape(-1, 1, 1, 1)
        assert torch.allclose(target, g.sqrt() * eps - (1 - g).sqrt() * x0)


def test_strength_one_is_the_plain_sampler_and_lower_strength_starts_from_the_source():
    net = Gaussian(0.5)
    cond = torch.rand(1, 3, 8, 8) * 2 - 1
    g = D.gammas(TRAIN_SCHEDULE)
    run = lambda **kw: S.ddim(net, cond, g, steps=10, generators=[seeds.generator(2, 0)], **kw)
    assert torch.equal(run(strength=1.0), run())
    # At tiny strength, the start is the source with almost no noise, and the Gaussian-prior
    # denoiser only shrinks it a little: the output stays close to the source.
    weak = run(strength=0.01)
    assert (weak - cond).abs().mean() < 0.1 < (run() - cond).abs().mean()
    assert len(S.respace(g, 10, strength=0.5)) == 10 and S.respace(g, 10, 0.5)[-1] == g[999]
    with pytest.raises(ValueError, match="strength"):
        S.respace(g, 10, strength=0.0)


def test_dpmpp_agrees_with_ddim_on_an_analytic_problem():
    # Both solve the probability-flow ODE from the same starting noise. For data ~ N(0, s^2) its
    # exact solution keeps x_t / sqrt(gamma s^2 + 1 - gamma) constant.
    net = Gaussian(0.5)
    cond = torch.zeros(2, 3, 16, 16)
    g = D.gammas(TRAIN_SCHEDULE)
    gens = lambda: [seeds.generator(9, k) for k in range(2)]
    x_T, g_T = S.randn_like_per_sample(cond, gens()), g[-1].item()
    exact = (x_T * 0.5 / math.sqrt(g_T * 0.25 + 1 - g_T)).clamp(-1, 1)
    ddim_many = S.ddim(net, cond, g, steps=1000, generators=gens(), clip=False)
    dpmpp_many = S.dpmpp(net, cond, g, steps=200, generators=gens(), clip=False)
    assert (ddim_many - exact).abs().max() < 5e-3
    assert (dpmpp_many - ddim_many).abs().max() < 5e-3
    # Second order at 25 steps is closer to the exact solution than DDIM (first order) at 25.
    err = lambda x: (x - exact).abs().mean().item()
    dpmpp_25 = err(S.dpmpp(net, cond, g, steps=25, generators=gens(), clip=False))
    # Measured: 0.010 against DDIM's 0.038 (trailing levels, log-SNR spacing for DPM-Solver++).
    assert dpmpp_25 < 0.012 and dpmpp_25 < err(S.ddim(net, cond, g, steps=25, generators=gens(), clip=False)) / 3


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    net = Gaussian(0.5)
    cond = torch.zeros(1, 3, 8, 8)
    g = D.gammas(TRAIN_SCHEDULE)
    run = lambda eta, seed: S.ddim(net, cond, g, steps=10, eta=eta, generators=[seeds.generator(seed, 0)])
    assert torch.equal(run(0.0, 3), run(0.0, 3))
    assert not torch.equal(run(0.0, 3), run(0.0, 4))
    # eta = 0 uses only the starting noise; eta = 1 draws fresh noise at each step.
    gen_a, gen_b = seeds.generator(3, 0), seeds.generator(3, 0)
    S.ddim(net, cond, g, steps=10, eta=0.0, generators=[gen_a])
    S.ddim(net, cond, g, steps=10, eta=1.0, generators=[gen_b])
    assert not torch.equal(torch.randn(4, generator=gen_a), torch.randn(4, generator=gen_b))


def tiny_network():
    return randomize(build_network(ModelConfig(unet=PRESETS["tiny"], image_size=32)))


def test_sample_i_does_not_depend_on_the_batch():
    net = tiny_network()
    cond = torch.rand(3, 3, 32, 32) * 2 - 1
    g = D.gammas(TRAIN_SCHEDULE)
    gens = lambda ks: [seeds.generator(5, k) for k in ks]
    # The noise of sample i is bit-identical whatever else is drawn beside it.
    assert torch.equal(S.randn_like_per_sample(cond, gens([0, 1, 2]))[1],
                       S.randn_like_per_sample(cond[1:2], gens([1]))[0])
    batch = S.ddim(net, cond, g, steps=4, generators=gens([0, 1, 2]))
    single = S.ddim(net, cond[1:2], g, steps=4, generators=gens([1]))
    # The network's kernels round differently at other batch sizes (~1e-7); nothing else differs.
    assert torch.allclose(batch[1], single[0], atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_sample_generators_are_distinct_and_reproducible():
    draw = lambda seed, k: torch.randn(8, generator=seeds.generator(seed, k))
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 1), draw(0, 2))
    assert not torch.equal(draw(0, 1), draw(1, 1))
    assert not torch.equal(draw(1, 0), draw(0, 1))


@pytest.mark.parametrize("legacy", [True, False])
def test_sdpa_attention_equals_explicit_softmax(legacy):
    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=4, legacy_order=legacy)
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        ours = block(x)
        qkv = block.qkv(block.norm(x.reshape(2, 64, 64)))
        if legacy:
            q, k, v = qkv.reshape(2 * 4, 3 * 16, 64).split(16, dim=1)
        else:
            q, k, v = (z.reshape(2 * 4, 16, 64) for z in qkv.chunk(3, dim=1))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(16), dim=-1)
        h = torch.einsum("bts,bcs->bct", w, v).reshape(2, 64, 64)
        ref = (x.reshape(2, 64, 64) + block.proj_out(h)).reshape(2, 64, 8, 8)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_gamma_embedding_is_sinusoidal():
    emb = gamma_embedding(torch.tensor([0.0, 0.5]), 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    assert torch.allclose(emb[1], torch.cat([torch.cos(0.5 * freqs), torch.sin(0.5 * freqs)]))


def test_network_shapes_and_presets():
    net = tiny_network()
    out = net(torch.randn(2, 6, 32, 32), torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 3, 32, 32)
    assert net.downsample_factor == 2
    paper = PRESETS["paper256"]
    assert (paper.base_channels, paper.channel_mults, paper.num_res_blocks) == (64, (1, 2, 4, 8), 2)


def test_training_loss_l2_l1_masked_and_gradients():
    net = tiny_network()
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    g = D.gammas(TRAIN_SCHEDULE)
    gen = lambda: torch.Generator().manual_seed(0)
    l2 = D.training_loss(net, x0, to_gray(x0), train_gammas=g, generator=gen())
    l1 = D.training_loss(net, x0, x0, train_gammas=g, loss="l1", generator=gen())
    assert l2.item() > 0 and l1.item() > 0 and l2.item() != l1.item()
    l2.backward()
    assert net.out[2].weight.grad is not None and net.out[2].weight.grad.abs().sum() > 0
    # With the mask, only generated pixels count: the same error outside the mask changes nothing.
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16] = 1
    err = torch.ones(2, 3, 32, 32)
    err[:, :, 16:] = 100.0
    assert D.masked_mean(err, mask).item() == pytest.approx(1.0)
    assert D.masked_mean(err, None).item() == pytest.approx(50.5)
    with pytest.raises(ValueError, match="unknown loss"):
        D.training_loss(net, x0, x0, train_gammas=g, loss="l3")
