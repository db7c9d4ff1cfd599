"""Noise schedules and samplers, checked against their closed forms."""

import math

import pytest
import torch

from imgtrans.diffusion.noise_schedules import SCHEDULES, NoiseSchedule, ScheduleConfig
from imgtrans.diffusion.samplers import DDIMSampler, DDPMSampler, DPMSolverSampler, build_sampler
from imgtrans.errors import ImgtransError


@pytest.mark.parametrize("kind", SCHEDULES)
def test_alpha_bar_is_monotone_and_consistent_with_beta(kind):
    s = NoiseSchedule(ScheduleConfig(kind=kind, timesteps=200))
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()
    assert 0 < s.alphas_cumprod[-1] < s.alphas_cumprod[0] < 1


def test_linear_and_scaled_linear_endpoints():
    lin = NoiseSchedule(ScheduleConfig("linear", 1000, 1e-4, 0.02))
    assert lin.betas[0].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(0.02)
    scaled = NoiseSchedule(ScheduleConfig("scaled_linear", 1000, 1e-4, 0.02))
    assert scaled.betas[0].item() == pytest.approx(1e-4) and scaled.betas[-1].item() == pytest.approx(0.02)
    assert scaled.betas[500] < lin.betas[500]  # sqrt-space interpolation stays lower in the middle


def test_cosine_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    sched = NoiseSchedule(ScheduleConfig("cosine", T))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_signal_cosine_endpoints_are_the_signal_rates():
    sched = NoiseSchedule(ScheduleConfig("signal_cosine", 1000, min_signal_rate=0.02, max_signal_rate=0.95))
    assert math.sqrt(sched.alphas_cumprod[-1].item()) == pytest.approx(0.02, rel=1e-9)
    assert math.sqrt(sched.alphas_cumprod[0].item()) == pytest.approx(0.95, abs=2e-3)


def test_add_noise_statistics():
    s = NoiseSchedule(ScheduleConfig("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4000, 1, 4, 4), 0.5)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.full((4000,), 600)
    x_t = s.add_noise(x0, noise, t)
    ab = s.alphas_cumprod[600].item()
    assert x_t.mean().item() == pytest.approx(0.5 * math.sqrt(ab), abs=0.01)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.02)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_eps_and_v_conversions_invert(prediction):
    s = NoiseSchedule(ScheduleConfig("cosine", 100), prediction=prediction)
    x0, eps = torch.randn(3, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 5, 5, dtype=torch.float64)
    t = torch.tensor([0, 50, 99])
    x_t = s.add_noise(x0, eps, t)
    got_x0, got_eps = s.split(x_t, s.target(x0, eps, t), t)
    assert torch.allclose(got_x0, x0, atol=1e-8) and torch.allclose(got_eps, eps, atol=1e-8)


def oracle(schedule, point):
    """The ideal denoiser when the data is the single image `point`."""
    def predict(x_t, t):
        ab = schedule.alpha_bar(torch.tensor([t]), x_t)
        eps = (x_t - ab.sqrt() * point) / (1 - ab).sqrt()
        return schedule.target(point.expand_as(x_t), eps, torch.tensor([t]))
    return predict


@pytest.mark.parametrize("sampler_cls,kwargs", [(DDIMSampler, {"eta": 0.0}), (DDIMSampler, {"eta": 1.0}),
                                                (DDPMSampler, {}), (DPMSolverSampler, {})])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_samplers_recover_the_data_point(sampler_cls, kwargs, prediction):
    schedule = NoiseSchedule(ScheduleConfig("linear", 1000), prediction=prediction)
    sampler = sampler_cls(schedule, **kwargs)
    sampler.set_timesteps(50)
    point = torch.linspace(-1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    predict = oracle(schedule, point)
    for t in sampler.timesteps.tolist():
        x = sampler.step(predict(x, t), t, x, generator=g)
    assert torch.allclose(x, point.expand_as(x), atol=1e-6)


def gaussian_oracle(schedule, mean, std):
    """The ideal denoiser when every pixel of the data is N(mean, std²) on its own: E[x_0 | x_t] in closed form."""
    def predict(x_t, t):
        ab = schedule.alpha_bar(torch.tensor([t]), x_t)
        x0 = mean + ab.sqrt() * std ** 2 / (ab * std ** 2 + 1 - ab) * (x_t - ab.sqrt() * mean)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return schedule.target(x0, eps, torch.tensor([t]))
    return predict


def solve(sampler, predict, x, steps):
    sampler.set_timesteps(steps)
    for t in sampler.timesteps.tolist():
        x = sampler.step(predict(x, t), t, x)
    return x


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_dpm_solver_in_few_steps_lands_nearer_the_ode_solution_than_ddim(prediction):
    """DDIM (eta 0) and DPM-Solver++ solve the same probability-flow ODE: with 1000 DDIM steps as the reference,
    DPM-Solver++(2M) at 10 and 15 steps is far closer to it than DDIM at the same steps."""
    schedule = NoiseSchedule(ScheduleConfig("linear", 1000), prediction=prediction)
    predict = gaussian_oracle(schedule, mean=0.3, std=0.2)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = solve(DDIMSampler(schedule, clip_sample=False), predict, x_T, 1000)
    for steps in (10, 15):
        ddim = (solve(DDIMSampler(schedule, clip_sample=False), predict, x_T, steps) - reference).abs().max()
        dpm = (solve(DPMSolverSampler(schedule, clip_sample=False), predict, x_T, steps) - reference).abs().max()
        assert dpm < ddim / 5, (steps, float(dpm), float(ddim))
    assert build_sampler("dpmpp_2m", schedule).__class__ is DPMSolverSampler
    with pytest.raises(ImgtransError, match="invalid sampler 'unipc'"):
        build_sampler("unipc", schedule)


def test_ddim_eta_zero_is_deterministic():
    schedule = NoiseSchedule(ScheduleConfig("cosine", 100))
    model = lambda x, t: torch.tanh(x) * 0.5  # noqa: E731 - any fixed function of x stands in for a net
    outs = []
    for seed in (0, 1):
        sampler = DDIMSampler(schedule, eta=0.0)
        sampler.set_timesteps(10)
        x = torch.ones(1, 1, 3, 3)
        g = torch.Generator().manual_seed(seed)
        for t in sampler.timesteps.tolist():
            x = sampler.step(model(x, t), t, x, generator=g)
        outs.append(x)
    assert torch.equal(outs[0], outs[1])


def test_set_timesteps_spacing():
    sampler = DDIMSampler(NoiseSchedule(ScheduleConfig("linear", 1000)))
    steps = sampler.set_timesteps(50)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 50 and (steps[1:] < steps[:-1]).all()
    with pytest.raises(ImgtransError, match="sample_steps"):
        sampler.set_timesteps(0)


@pytest.mark.parametrize("cfg,message", [
    (ScheduleConfig("linear", beta_end=1.5), "inside \\(0, 1\\)"),
    (ScheduleConfig("linear", beta_start=0.0), "inside \\(0, 1\\)"),
    (ScheduleConfig("scaled_linear", beta_start=0.02, beta_end=0.01), "monotonically"),
    (ScheduleConfig("signal_cosine", min_signal_rate=0.9, max_signal_rate=0.5), "min_signal_rate < max_signal_rate"),
    (ScheduleConfig("quadratic"), "valid values: linear"),
    (ScheduleConfig("linear", timesteps=1), "at least 2"),
])
def test_bad_schedule_parameters_are_rejected(cfg, message):
    with pytest.raises(ImgtransError, match=message):
        NoiseSchedule(cfg)


@pytest.mark.parametrize("sampler_cls", [DDIMSampler, DDPMSampler])
def test_clip_sample_keeps_predictions_in_the_data_range(sampler_cls):
    schedule = NoiseSchedule(ScheduleConfig("cosine", 100))
    finals = {}
    for clip in (True, False):
        sampler = sampler_cls(schedule, clip_sample=clip)
        sampler.set_timesteps(10)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 1, 8, 8, generator=g) * 3
        for t in sampler.timesteps.tolist():
            x = sampler.step(torch.zeros_like(x), t, x, generator=g)  # a useless ε predictor
        finals[clip] = x
    assert finals[True].abs().max() <= 1 + 1e-6
    assert finals[False].abs().max() > 1
