import pytest
import torch

from course_utils import schedules

SCHEDULES = [
    schedules.LinearSchedule(),
    schedules.LinearSchedule(sigma_min=0.01),
    schedules.VPSchedule(),
    schedules.VESchedule(),
    schedules.CosineSchedule(),
    schedules.Reversed(schedules.VPSchedule()),
]
IDS = ["linear", "linear-smin", "vp", "ve", "cosine", "reversed-vp"]


def times(n=7):
    return torch.linspace(0.05, 0.95, n, dtype=torch.float64)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_derivatives_match_autograd(sched):
    t = times().requires_grad_(True)
    out = sched(t)

    def grad(v):  # a constant coefficient (VE's alpha_t = 1) has derivative 0
        return torch.autograd.grad(v.sum(), t, retain_graph=True)[0] if v.requires_grad else torch.zeros_like(t)

    d_alpha, d_sigma = grad(out.alpha_t), grad(out.sigma_t)
    torch.testing.assert_close(out.d_alpha_t, d_alpha)
    torch.testing.assert_close(out.d_sigma_t, d_sigma)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("shape", [(7, 2), (7, 1, 4, 4)])
def test_prediction_conversions_round_trip(sched, shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    eps = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = times()
    z = sched.sample(eps, x, t)
    torch.testing.assert_close(sched.eps_to_x(eps, z, t), x)
    torch.testing.assert_close(sched.x_to_eps(x, z, t), eps)
    u = sched.velocity(eps, x, t)
    torch.testing.assert_close(sched.eps_to_velocity(eps, z, t), u)
    torch.testing.assert_close(sched.velocity_to_eps(u, z, t), eps)
    torch.testing.assert_close(sched.velocity_to_x(u, z, t), x)
    torch.testing.assert_close(sched.score_to_eps(sched.eps_to_score(eps, z, t), z, t), eps)


def test_velocity_is_the_time_derivative_of_the_path():
    sched = schedules.VPSchedule()
    x, eps = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = times(5)
    _, u = torch.func.jvp(lambda s: sched.sample(eps, x, s), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(sched.velocity(eps, x, t), u)


def test_known_values():
    t = times()
    vp = schedules.VPSchedule()(t)
    torch.testing.assert_close(vp.alpha_t**2 + vp.sigma_t**2, torch.ones_like(t))  # variance preserving
    lin = schedules.LinearSchedule()
    x, eps = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    torch.testing.assert_close(lin.velocity(eps, x, t), x - eps)  # rectified flow's target
    ve = schedules.VESchedule(0.01, 10.0)(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ve.sigma_t, torch.tensor([0.01, 10.0], dtype=torch.float64))
    cos = schedules.CosineSchedule()(torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(cos.alpha_t, torch.ones(1, dtype=torch.float64))
    lam = schedules.VPSchedule().log_snr(t)
    assert (lam[1:] < lam[:-1]).all()  # SNR falls as data turns into noise


def test_reversed_reads_time_backwards():
    base = schedules.LinearSchedule()
    rev = schedules.Reversed(base)
    t = times()
    assert rev.direction == "data_to_noise"
    torch.testing.assert_close(rev(t).alpha_t, base(1 - t).alpha_t)
    torch.testing.assert_close(rev(t).d_sigma_t, -base(1 - t).d_sigma_t)
