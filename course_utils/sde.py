"""Forward SDEs of diffusion models, their reverse-time SDE and probability-flow ODE.

Time convention of notebooks 04–07: t = 0 is data, t = T (= 1) is noise.

    forward        dx = f(x, t) dt + g(t) dW                         (data → noise)
    reverse        dx = [f(x, t) − g(t)² ∇log p_t(x)] dt + g(t) dW̄    (Anderson 1982)
    prob. flow     dx = [f(x, t) − ½ g(t)² ∇log p_t(x)] dt             (Song et al. 2021, eq. 13)
    family, λ ≥ 0  dx = [f(x, t) − ½(1 + λ²) g(t)² ∇log p_t(x)] dt + λ g(t) dW̄

All of them have the forward marginals p_t: λ = 1 is the reverse SDE, λ = 0 the probability-flow
ODE (`reverse_drift(drift, diffusion, score, lam)`, `sde.reverse(score, lam=...)`).
The reverse equations run from t = T down to 0 (Δt < 0); `solvers.euler_maruyama` with
`t_span=(T, 0)` and `solvers.odeint` integrate them as they are. `check_reverse` runs one
and compares the mean and variance of its end points with the data's.

The probability-flow ODE is a continuous normalizing flow (notebook 03), so it gives likelihoods:
log p_0(x) = log p_T(x_T) + ∫_0^T ∇·f̃(x_t, t) dt along its path from x_0 = x, f̃ = f − ½ g² ∇log p_t
(`probability_flow_log_prob`, with `cnf.integrate`'s exact divergence).

DDIM's step with parameter η on the VP SDE is, to first order in the step, the Euler–Maruyama step of
the member λ = η (`ddim_step_coefficients` against `family_step_coefficients`).

Every SDE here is *affine*: its marginal given x(0) = x0 is the path of a schedule,
x(t) = alpha_t x0 + sigma_t eps (course_utils.schedules). The SDE with those marginals has

    f(x, t) = (d log alpha_t / dt) x,     g(t)² = d sigma_t² / dt − 2 (d log alpha_t / dt) sigma_t²

(Kingma et al. 2021, app. A). `VPSDE`, `VESDE` and `OrnsteinUhlenbeck` override `drift`
and `diffusion` with their textbook closed forms; the tests check they agree.

Notation: x0 = data (x in `schedules`), `mean, std = sde.marginal_prob(x0, t)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from . import cnf, solvers
from .tensors import append_dims, batch_time
from .schedules import AffineSchedule, OUSchedule, ScheduleOutput, VESchedule, VPSchedule

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Marginal(NamedTuple):
    """x(t) | x(0) = x0 ~ N(mean, std² I): `mean: (B, *D)`, `std: (B,)`."""

    mean: torch.Tensor
    std: torch.Tensor


class SDE:
    """dx = f(x, t) dt + g(t) dW on [0, T]; subclasses give `drift`, `diffusion`, `marginal_prob`, prior."""

    T: float = 1.0

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t), shape like `x: (B, *D)`; `t: (B,)`."""
        raise NotImplementedError

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), shape (B,)."""
        raise NotImplementedError

    def marginal_prob(self, x0: torch.Tensor, t) -> Marginal:
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        raise NotImplementedError

    def prior_sample(self, shape, *, generator: torch.Generator | None = None, device=None,
                     dtype=torch.float32) -> torch.Tensor:
        """x(T) ~ N(0, prior_std² I), shape `(B, *D)`."""
        dev = generator.device if generator is not None else device
        z = torch.randn(tuple(shape), generator=generator, device=dev, dtype=dtype)
        return (self.prior_std * z).to(device) if device is not None else self.prior_std * z

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std² I), `(B, *D) -> (B,)`."""
        d = z[0].numel()
        return -0.5 * (z.flatten(1) ** 2).sum(1) / self.prior_std**2 - d * math.log(
            self.prior_std * math.sqrt(2 * math.pi))

    def sample_marginal(self, x0: torch.Tensor, t, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """x(t) = mean + std · eps: a draw of the forward process at time t, without simulating it."""
        mean, std = self.marginal_prob(x0, t)
        dev = generator.device if generator is not None else x0.device
        eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype).to(x0.device)
        return mean + append_dims(std, x0.ndim) * eps

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False, *, lam: float | None = None) -> "ReverseSDE":
        """The reverse-time SDE driven by `score_fn(x, t)`: Anderson's (λ = 1, the default), the
        probability-flow ODE (`probability_flow=True`, λ = 0), or the member `lam` = λ ≥ 0 of the family."""
        if not callable(score_fn):
            raise ValueError("score_fn must be a callable score(x, t) -> ∇log p_t(x).")
        if probability_flow and lam not in (None, 0):
            raise ValueError(f"probability_flow=True is the member λ = 0; got lam={lam}.")
        lam = 0.0 if probability_flow else 1.0 if lam is None else float(lam)
        return ReverseSDE(self, score_fn, lam == 0, lam)


def reverse_drift(drift, diffusion, score_fn: ScoreFn | None, lam: float = 1.0):
    """The drift f − ½(1 + λ²) g² ∇log p_t of the reverse-time member λ ≥ 0, as `drift(x, t)` in t (dt < 0).

    Its diffusion is λ g. λ = 1: Anderson's reverse SDE, f − g² ∇log p_t; λ = 0: the probability-flow
    ODE, f − ½ g² ∇log p_t. `score_fn=None` leaves the score term out: the forward drift f read
    backwards (the naive reversal, which does not bring the data back).
    """
    if lam < 0:
        raise ValueError(f"The noise scale λ must be non-negative, got {lam}.")
    if score_fn is None:
        return lambda x, t: drift(x, batch_time(t, x))
    c = 0.5 * (1 + lam**2)

    def reverse(x: torch.Tensor, t) -> torch.Tensor:
        t = batch_time(t, x)
        g2 = append_dims(torch.as_tensor(diffusion(t), dtype=x.dtype, device=x.device) ** 2, x.ndim)
        return drift(x, t) - c * g2 * score_fn(x, t)

    return reverse


@dataclass
class ReverseSDE:
    """dx = [f − ½(1 + λ²) g² ∇log p_t] dt + λ g dW̄: λ = 1 the reverse SDE, λ = 0 the probability-flow ODE.

    Integrate from t = T to 0: `euler_maruyama(rev.drift, rev.diffusion, x_T, (T, 0))`, or, for
    the ODE, `odeint(model_field(rev.drift), x_T, (T, 0))`.
    """

    sde: SDE
    score_fn: ScoreFn
    probability_flow: bool = False
    lam: float | None = None

    def __post_init__(self):
        if self.lam is None:
            self.lam = 0.0 if self.probability_flow else 1.0
        if self.probability_flow != (self.lam == 0):
            raise ValueError(f"probability_flow={self.probability_flow} disagrees with lam={self.lam}.")

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        return reverse_drift(self.sde.drift, self.sde.diffusion, self.score_fn, self.lam)(x, t)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.lam * self.sde.diffusion(t)


class ReverseCheck(NamedTuple):
    """End points of a reverse-time simulation against the data's moments (`check_reverse`)."""

    x: torch.Tensor  # (B, *D) the end points at t = 0
    mean: torch.Tensor  # (F,) their mean per coordinate
    var: torch.Tensor  # (F,) their variance per coordinate
    mean_error: float  # max over coordinates of |mean − data mean| / data std
    var_ratio: float  # the ratio var / data var farthest from 1 (on a log scale)
    passed: bool  # mean_error < tol and |log var_ratio| < log(1 + tol)


def check_reverse(drift, diffusion, x_T: torch.Tensor, data_mean, data_var, *, T: float = 1.0, steps: int = 200,
                  generator: torch.Generator | None = None, tol: float = 0.1) -> ReverseCheck:
    """Run dx = drift dt + diffusion dW̄ from t = T down to 0 (Euler–Maruyama, Δt < 0) and compare the
    end points' mean and variance per coordinate with the data's (`data_mean`, `data_var`: scalars or
    (F,)). It passes when every mean is within `tol` data standard deviations and every variance
    within a factor 1 + `tol` of the data's. A drift without the score term fails it: it keeps
    spreading the noise instead of bringing it back.
    """
    x = solvers.euler_maruyama(drift, diffusion, x_T, (T, 0.0), steps=steps, generator=generator).x
    flat = x.detach().flatten(1).double().cpu()
    mean, var = flat.mean(0), flat.var(0)
    data_mean = torch.as_tensor(data_mean, dtype=torch.float64).flatten().expand_as(mean)
    data_var = torch.as_tensor(data_var, dtype=torch.float64).flatten().expand_as(var)
    mean_error = float(((mean - data_mean).abs() / data_var.sqrt()).max())
    log_ratio = torch.log(var / data_var)
    var_ratio = float(torch.exp(log_ratio[log_ratio.abs().argmax()])) if torch.isfinite(log_ratio).all() else math.inf
    passed = mean_error < tol and abs(math.log(var_ratio)) < math.log(1 + tol) if math.isfinite(var_ratio) else False
    return ReverseCheck(x, mean, var, mean_error, var_ratio, bool(passed))


class StepCoefficients(NamedTuple):
    """One step from t to t − h written as x ↦ a_x x + a_s ∇log p_t(x) + √var z, z ~ N(0, I)."""

    a_x: float
    a_s: float
    var: float


def _vp_alpha(sde: "VPSDE", t: float) -> float:
    return float(sde.schedule(torch.tensor([t], dtype=torch.float64)).alpha_t[0])


def ddim_step_coefficients(sde: "VPSDE", t: float, h: float, eta: float) -> StepCoefficients:
    """DDIM's step with parameter η from t to s = t − h on the VP SDE (Song, Meng & Ermon 2021, eq. 12).

    With ᾱ = α², x̂_0 = (x − σ_t ε̂)/α_t and ε̂ = −σ_t ∇log p_t: x_s = α_s x̂_0 + √(σ_s² − σ_η²) ε̂ + σ_η z,
    σ_η² = η² (1 − ᾱ_s)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_s).
    """
    if not 0 < h < t:
        raise ValueError(f"Need 0 < h < t, got t={t}, h={h}.")
    a_t, a_s = _vp_alpha(sde, t), _vp_alpha(sde, t - h)
    s2_t, s2_s = 1 - a_t**2, 1 - a_s**2
    var = eta**2 * s2_s / s2_t * (1 - a_t**2 / a_s**2)
    return StepCoefficients(a_s / a_t, a_s * s2_t / a_t - math.sqrt(s2_t * (s2_s - var)), var)


def family_step_coefficients(sde: SDE, t: float, h: float, lam: float) -> StepCoefficients:
    """One Euler–Maruyama step, from t to t − h, of the reverse-time member λ (`reverse_drift`, noise λ g)
    of an SDE with linear drift f = a(t) x: a_x = 1 − a(t) h, a_s = ½(1 + λ²) g² h, var = λ² g² h."""
    tt = torch.tensor([t], dtype=torch.float64)
    a = float(sde.drift(torch.ones(1, 1, dtype=torch.float64), tt)[0, 0])
    g2 = float(sde.diffusion(tt)[0]) ** 2
    return StepCoefficients(1 - a * h, 0.5 * (1 + lam**2) * g2 * h, lam**2 * g2 * h)


class AffineSDE(SDE):
    """The SDE whose marginals are the path x(t) = alpha_t x0 + sigma_t eps of `schedule`.

    f(x, t) = (alpha'_t / alpha_t) x,  g(t)² = 2 sigma_t sigma'_t − 2 (alpha'_t / alpha_t) sigma_t².
    (At t = 0 with sigma_0 = 0 the product sigma_t sigma'_t is 0·∞: subclasses with a
    closed form override `diffusion`.) The prior is N(0, sigma_T² I), which assumes alpha_T x0
    is negligible against sigma_T.
    """

    def __init__(self, schedule: AffineSchedule, T: float = 1.0):
        if getattr(schedule, "direction", None) != "data_to_noise":
            raise ValueError("An SDE needs a data-to-noise schedule (t = 0 data, t = T noise), e.g. "
                             "VPSchedule or VESchedule; wrap a flow schedule in schedules.Reversed.")
        if T <= 0:
            raise ValueError(f"The end time T must be positive, got {T}.")
        self.schedule, self.T = schedule, float(T)

    def _schedule(self, t, x) -> tuple[ScheduleOutput, torch.Tensor]:
        t = batch_time(t, x)
        return self.schedule(t), t

    def drift(self, x, t):
        s, _ = self._schedule(t, x)
        return append_dims(s.d_alpha_t / s.alpha_t, x.ndim) * x

    def diffusion(self, t):
        s = self.schedule(torch.as_tensor(t))
        g2 = 2 * s.sigma_t * s.d_sigma_t - 2 * (s.d_alpha_t / s.alpha_t) * s.sigma_t**2
        return torch.sqrt(g2.clamp_min(0))

    def marginal_prob(self, x0, t):
        """mean = alpha_t x0, std = sigma_t."""
        s, _ = self._schedule(t, x0)
        return Marginal(append_dims(s.alpha_t, x0.ndim) * x0, s.sigma_t)

    @property
    def prior_std(self) -> float:
        return float(self.schedule(torch.tensor([self.T], dtype=torch.float64)).sigma_t[0])


class VPSDE(AffineSDE):
    """Variance preserving (DDPM's limit): dx = −½ β(t) x dt + √β(t) dW, β linear in t.

    Marginal: mean = e^{−½∫β} x0, std² = 1 − e^{−∫β} (Song et al. 2021, eq. 29).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"Need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}.")
        super().__init__(VPSchedule(beta_min, beta_max))
        self.beta_min, self.beta_max = beta_min, beta_max

    def drift(self, x, t):
        return -0.5 * append_dims(self.schedule.beta(batch_time(t, x)), x.ndim) * x

    def diffusion(self, t):
        return torch.sqrt(self.schedule.beta(torch.as_tensor(t)))

    @property
    def prior_std(self) -> float:
        return 1.0


class VESDE(AffineSDE):
    """Variance exploding (NCSN's limit): dx = √(d sigma_t²/dt) dW = sigma_t √(2 log(σ_max/σ_min)) dW.

    sigma_t = σ_min (σ_max/σ_min)^t. The marginal std is sigma_t, as if the data already carried
    noise of std σ_min at t = 0 (the usual convention; σ_min is small).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
        super().__init__(VESchedule(sigma_min, sigma_max))
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        sigma_t = self.schedule(torch.as_tensor(t)).sigma_t
        return sigma_t * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))


class OrnsteinUhlenbeck(AffineSDE):
    """dx = −θ x dt + σ dW: mean e^{−θt} x0, variance σ²/(2θ) (1 − e^{−2θt}) → stationary N(0, σ²/(2θ)).

    (A mean-reverting level μ ≠ 0 is the same process for x − μ.) With θ = β/2, σ = √β it
    is the VP SDE with constant β.
    """

    def __init__(self, theta: float = 1.0, sigma: float = 1.0, T: float = 1.0):
        if theta <= 0 or sigma <= 0:
            raise ValueError(f"Need theta > 0 and sigma > 0, got {theta}, {sigma}.")
        super().__init__(OUSchedule(theta, sigma), T)
        self.theta, self.sigma = theta, sigma

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, t):
        t = torch.as_tensor(t)
        return torch.full_like(t, self.sigma, dtype=t.dtype if t.is_floating_point() else torch.float32)

    @property
    def prior_std(self) -> float:
        """The stationary std σ/√(2θ)."""
        return self.sigma / math.sqrt(2 * self.theta)


def probability_flow_log_prob(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, *, method: str = "dopri5",
                              rtol: float = 1e-6, atol: float = 1e-6, steps: int = 64,
                              prior_log_prob=None) -> torch.Tensor:
    """log p_0(x) by the probability-flow ODE: `(B, *D) -> (B,)`.

    Integrates dx/dt = f̃(x, t) = f − ½ g² ∇log p_t with its divergence (`cnf.integrate`, exact trace)
    from t = 0 to T and returns log p_T(x_T) + ∫ ∇·f̃ dt, with log p_T the SDE's prior (or
    `prior_log_prob(x_T)`). Exact up to the solver's error and the prior's approximation of p_T.
    The default adaptive solver copes with points far in the tails, where the flow is stiff near
    t = 0; `steps` is used by the fixed-step methods only.
    """
    pf = sde.reverse(score_fn, probability_flow=True)
    with torch.no_grad():
        sol = cnf.integrate(lambda y, t: pf.drift(y, t), x, (0.0, sde.T), method=method, steps=steps,
                            rtol=rtol, atol=atol)
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    return prior(sol.x) - sol.delta_log_p
