"""Tests of course_utils.normalizing_flows: invertibility, log-dets against autograd, densities."""

import math

import pytest
import torch

from course_utils import data, exercises, train
from course_utils import normalizing_flows as nf


def _perturbed(make, seed: int = 0, scale: float = 0.5) -> nf.Flow:
    """The flow `make()` builds, in float64, with seeded random parameters far from the identity.

    Both the layers' own initialisation and the perturbation come from `seed`, so a test sees
    the same flow whatever ran before it in the same process.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        flow = make().double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return flow


FLOWS = {
    "planar_layer": lambda: nf.PlanarLayer(3),
    "planar_flow": lambda: nf.PlanarFlow(2, 6),
    "coupling": lambda: nf.AffineCoupling([1, 0, 1, 0], hidden=16),
    "realnvp_2d": lambda: nf.RealNVP(2, 6, hidden=16),
    "realnvp_5d": lambda: nf.RealNVP(5, 4, hidden=16),
}


def test_standard_normal_log_prob_matches_torch():
    z = torch.randn(10, 3, dtype=torch.float64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(nf.standard_normal_log_prob(z), want)
    img = torch.randn(4, 1, 3, 3, dtype=torch.float64)  # summed over all but the batch dim (CNFs on images)
    torch.testing.assert_close(nf.standard_normal_log_prob(img), nf.standard_normal_log_prob(img.flatten(1)))


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_undoes_forward(name):
    flow = _perturbed(FLOWS[name])
    x = 1.5 * torch.randn(64, flow.dim, dtype=torch.float64)
    z, _ = flow(x)
    assert (z - x).abs().max() > 1e-2  # the flow really moves points
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(flow(flow.inverse(x)).z, x, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", FLOWS)
def test_log_det_matches_autograd_jacobian(name):
    flow = _perturbed(FLOWS[name], seed=1)
    x = torch.randn(5, flow.dim, dtype=torch.float64)
    log_det = flow(x).log_det
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None]).z[0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(J).logabsdet)
    # the vectorised helper agrees with the per-point autograd Jacobians
    torch.testing.assert_close(nf.log_prob_via_jacobian(lambda v: flow(v).z, x), flow.log_prob(x))


@pytest.mark.parametrize("name", ["planar_flow", "realnvp_2d"])
def test_log_prob_integrates_to_one(name):
    flow = _perturbed(FLOWS[name], seed=2, scale=0.3)
    n, lim = 401, 9.0
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
        x = flow.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert abs(mass.item() - 1) < 5e-3
    # a second way to the same number: the share of samples that land inside the grid's box
    inside = (x.abs() <= lim).all(1).double().mean()
    assert abs(mass.item() - inside.item()) < 3e-3


def test_sample_agrees_with_log_prob():
    """Two ways to get E[x]: average samples, or integrate x p(x) on a grid."""
    flow = _perturbed(lambda: nf.RealNVP(2, 4, hidden=16), seed=3, scale=0.3)
    with torch.no_grad():
        x = flow.sample(40_000, generator=torch.Generator().manual_seed(0))
        g = torch.linspace(-9, 9, 401, dtype=torch.float64)
        pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
        p = flow.log_prob(pts).exp() * (g[1] - g[0]) ** 2
    torch.testing.assert_close(x.mean(0), (p[:, None] * pts).sum(0), atol=0.03, rtol=0)
    assert x.dtype == torch.float64 and x.shape == (40_000, 2)


def test_sample_is_reproducible_with_a_generator():
    flow = nf.RealNVP(2, 2, hidden=8)
    a = flow.sample(7, generator=torch.Generator().manual_seed(5))
    b = flow.sample(7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_linear_change_of_variables_is_the_gaussian():
    """x = A z + mu with z ~ N(0, I) has density N(mu, A Aᵀ); f(x) = A⁻¹(x − mu)."""
    A = torch.tensor([[2.0, 0.5], [-0.3, 0.7]], dtype=torch.float64)
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x = torch.randn(20, 2, dtype=torch.float64)
    got = nf.log_prob_via_jacobian(lambda v: torch.linalg.solve(A, (v - mu).T).T, x)
    want = torch.distributions.MultivariateNormal(mu, A @ A.T).log_prob(x)
    torch.testing.assert_close(got, want)
    with torch.no_grad():  # the autograd Jacobian must work inside no_grad too
        torch.testing.assert_close(nf.log_prob_via_jacobian(lambda v: torch.linalg.solve(A, (v - mu).T).T, x), want)
    torch.testing.assert_close(exercises.normalizing_flows.reference_linear_pushforward_log_prob(x, A, mu), want)


def test_fresh_layers_are_the_identity():
    x = torch.randn(8, 2)
    for layer in (nf.PlanarLayer(2), nf.AffineCoupling([0, 1])):
        z, log_det = layer(x)
        torch.testing.assert_close(z, x)
        torch.testing.assert_close(log_det, torch.zeros(8))


def test_planar_constraint_keeps_the_layer_invertible():
    layer = nf.PlanarLayer(2).double()
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 0.0]))
        layer.u.copy_(torch.tensor([-5.0, 0.0]))  # wᵀu = −5 would fold space
    assert (layer.u_hat() @ layer.w).item() > -1
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)[:, None] * torch.tensor([1.0, 0.3])
    z, log_det = layer(x)
    assert torch.all(torch.diff(z[:, 0]) > 0)  # monotone along w
    torch.testing.assert_close(layer.inverse(z), x, atol=1e-9, rtol=0)


def test_coupling_leaves_masked_coordinates_alone():
    layer = _perturbed(lambda: nf.AffineCoupling([1, 0, 0, 1], hidden=8))
    x = torch.randn(10, 4, dtype=torch.float64)
    z = layer(x).z
    torch.testing.assert_close(z[:, [0, 3]], x[:, [0, 3]])
    J = nf.jacobian(lambda v: layer(v).z, x)
    assert J[:, [0, 3]][:, :, [1, 2]].abs().max() == 0  # pass-through rows ignore the rest


def test_training_lowers_the_nll():
    torch.manual_seed(0)
    flow = nf.RealNVP(2, 4, hidden=32)
    gen = torch.Generator().manual_seed(0)
    A = torch.tensor([[1.0, 0.0], [0.9, 0.3]])
    batch = lambda step: torch.randn(256, 2, generator=gen) @ A.T  # noqa: E731
    x_test = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)) @ A.T
    with torch.no_grad():
        before = nf.nll_loss(flow, x_test).item()
    train.fit(flow, nf.nll_loss, batch, train.TrainConfig(steps=150, lr=5e-3, progress=False))
    with torch.no_grad():
        after = nf.nll_loss(flow, x_test).item()
    entropy = 0.5 * 2 * math.log(2 * math.pi * math.e) + math.log(abs(torch.linalg.det(A)).item())
    assert before - after > 0.8 and after - entropy < 0.15, (before, after, entropy)


def test_checkpoint_round_trip(tmp_path):
    flow = nf.RealNVP(2, 2, hidden=8)
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "flow.pt"
    train.fit(flow, nf.nll_loss, lambda s: torch.randn(32, 2, generator=gen),
              train.TrainConfig(steps=3, progress=False, checkpoint=str(path)))
    fresh = nf.RealNVP(2, 2, hidden=8)
    train.load_model(path, fresh)
    x = torch.randn(4, 2)
    torch.testing.assert_close(fresh.log_prob(x), flow.log_prob(x))
    with pytest.raises(train.CheckpointError):
        train.load_model(path, nf.RealNVP(2, 3, hidden=8))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nf.RealNVP(2, 2)(torch.zeros(4, 3)), r"shape \(B, 2\)"),
        (lambda: nf.RealNVP(2, 2).log_prob(torch.zeros(4)), r"shape \(B, 2\)"),
        (lambda: nf.PlanarFlow(3, 2).inverse(torch.zeros(4, 2)), r"z of shape \(B, 3\)"),
        (lambda: nf.RealNVP(2, 2).sample(0), "positive integer"),
        (lambda: nf.RealNVP(2, 0), "n_layers"),
        (lambda: nf.RealNVP(1, 2), "dim >= 2"),
        (lambda: nf.AffineCoupling([1, 1]), "at least one of each"),
        (lambda: nf.AffineCoupling([1, 0.5]), "0s and 1s"),
        (lambda: nf.FlowSequence(nf.PlanarLayer(2), nf.PlanarLayer(3)), "same dim"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_exercise_checks_pass_the_reference_and_catch_mistakes():
    ref_lin = exercises.normalizing_flows.reference_linear_pushforward_log_prob
    ref_cpl = exercises.normalizing_flows.reference_coupling_log_det
    exercises.check_linear_pushforward_log_prob(ref_lin)
    exercises.check_coupling_log_det(ref_cpl)

    def lin_stub(x, A, mu):
        raise NotImplementedError

    def lin_unknown(x, A, mu):  # a mistake no diagnosis knows: the generic message stays
        return ref_lin(x, A, mu) + 0.1 * x[:, 0] ** 2

    def coupling_unknown(x, mask, net):
        return ref_cpl(x, mask, net) + 0.1 * x[:, 0] ** 2

    for fn, check, hint in [
        (lin_stub, exercises.check_linear_pushforward_log_prob, "not implemented"),
        (lin_unknown, exercises.check_linear_pushforward_log_prob, "wrong values"),
        (coupling_unknown, exercises.check_coupling_log_det, "wrong values"),
    ]:
        with pytest.raises(exercises.ExerciseError, match=hint):
            check(fn)


# Each typical mistake, written as a student would write it, and words its message must contain.
COUPLING_MISTAKES = {
    "forgot (1 - m)": (lambda x, m, net: net(m * x)[0].sum(1), "forgets the (1 − mask)"),
    "summed the masked dims": (lambda x, m, net: (m * net(m * x)[0]).sum(1), "sums s over the masked"),
    "conditioner on all of x": (lambda x, m, net: ((1 - m) * net(x)[0]).sum(1),
                                "conditioner is fed the whole x"),
    "conditioner on (1 - m) x": (lambda x, m, net: ((1 - m) * net((1 - m) * x)[0]).sum(1),
                                 "conditioner is fed (1 − mask) * x"),
    "both: all of x, no (1 - m)": (lambda x, m, net: net(x)[0].sum(1), "two mistakes: the log-det sums s over every"),
    "sign error": (lambda x, m, net: -((1 - m) * net(m * x)[0]).sum(1), "log-det has the wrong sign"),
    "summed e^s": (lambda x, m, net: ((1 - m) * net(m * x)[0].exp()).sum(1), "sums the scales e^s"),
    "summed t": (lambda x, m, net: ((1 - m) * net(m * x)[1]).sum(1), "sums the shift t"),
    "mean, not sum": (lambda x, m, net: ((1 - m) * net(m * x)[0]).mean(1), "averages over coordinates"),
}


def _log_n(z):  # log N(z; 0, I), written out
    return -0.5 * z.pow(2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def _log_abs_det(A):
    return torch.linalg.det(A).abs().log()


def _a_inv(A, v):  # A⁻¹ v for each row v, by an explicit inverse (not the reference's solve)
    return v @ torch.linalg.inv(A).T


LINEAR_MISTAKES = {
    "+ log|det A|": (lambda x, A, mu: _log_n(_a_inv(A, x - mu)) + _log_abs_det(A), "log-det has the wrong sign"),
    "no Jacobian": (lambda x, A, mu: _log_n(_a_inv(A, x - mu)), "leaves out the Jacobian term"),
    "A instead of A⁻¹": (lambda x, A, mu: _log_n((x - mu) @ A.T) - _log_abs_det(A), "sampling direction"),
    "A⁻¹x − μ": (lambda x, A, mu: _log_n(_a_inv(A, x) - mu) - _log_abs_det(A), "undo the shift first"),
    "no 2π": (lambda x, A, mu: -0.5 * _a_inv(A, x - mu).pow(2).sum(1) - _log_abs_det(A), "normalising constant"),
}


@pytest.mark.parametrize("mistake", COUPLING_MISTAKES)
def test_coupling_check_names_each_typical_mistake(mistake):
    student, words = COUPLING_MISTAKES[mistake]
    with pytest.raises(exercises.ExerciseError, match="coupling_log_det") as err:
        exercises.check_coupling_log_det(student)
    assert words in str(err.value), str(err.value)
    assert "wrong values" not in str(err.value)


@pytest.mark.parametrize("mistake", LINEAR_MISTAKES)
def test_linear_pushforward_check_names_each_typical_mistake(mistake):
    student, words = LINEAR_MISTAKES[mistake]
    with pytest.raises(exercises.ExerciseError, match="linear_pushforward_log_prob") as err:
        exercises.check_linear_pushforward_log_prob(student)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("exercise", ["coupling", "linear"])
def test_known_mistakes_are_told_apart(exercise):
    """On the inputs the diagnosis uses, every known mistake gives different numbers from the reference and
    from every other mistake, so no message can be given for the wrong mistake."""
    ex = exercises.normalizing_flows
    inputs, reference, mistakes = {
        "coupling": (ex._coupling_inputs, ex.reference_coupling_log_det, ex.COUPLING_MISTAKES),
        "linear": (ex._linear_inputs, ex.reference_linear_pushforward_log_prob, ex.LINEAR_MISTAKES),
    }[exercise]
    args = inputs(torch.Generator().manual_seed(12345))
    outputs = [reference(*args)] + [wrong(*args) for wrong, _ in mistakes]
    messages = [message for _, message in mistakes]
    assert len(set(messages)) == len(messages)
    for i in range(len(outputs)):
        for j in range(i):
            assert not torch.allclose(outputs[i], outputs[j], atol=1e-3), (i, j)


# ------------------------------------------------------------------- the coupling inverse exercise

INVERSE_MISTAKES = {
    "× e^s": (lambda z, m, net: m * z + (1 - m) * (z - net(m * z)[1]) * net(m * z)[0].exp(), "multiplies by e^s"),
    "divide, then subtract": (lambda z, m, net: m * z + (1 - m) * (z * (-net(m * z)[0]).exp() - net(m * z)[1]),
                              "subtracts t afterwards"),
    "forward map": (lambda z, m, net: m * z + (1 - m) * (z * net(m * z)[0].exp() + net(m * z)[1]),
                    "applies the forward map"),
    "+ t": (lambda z, m, net: m * z + (1 - m) * (z + net(m * z)[1]) * (-net(m * z)[0]).exp(), "adds the shift"),
    "conditioner on y_b": (lambda z, m, net: m * z + (1 - m) * (z - net((1 - m) * z)[1])
                           * (-net((1 - m) * z)[0]).exp(), "fed (1 − mask) * z"),
    "conditioner on all of z": (lambda z, m, net: m * z + (1 - m) * (z - net(z)[1]) * (-net(z)[0]).exp(),
                                "fed the whole z"),
    "no mask on the output": (lambda z, m, net: (z - net(m * z)[1]) * (-net(m * z)[0]).exp(), "to every coordinate"),
    "pass-through dropped": (lambda z, m, net: (1 - m) * (z - net(m * z)[1]) * (-net(m * z)[0]).exp(),
                             "returns zeros on the passed-through"),
}


@pytest.mark.parametrize("mistake", INVERSE_MISTAKES)
def test_coupling_inverse_check_names_each_typical_mistake(mistake):
    student, words = INVERSE_MISTAKES[mistake]
    with pytest.raises(exercises.ExerciseError, match="coupling_inverse") as err:
        exercises.check_coupling_inverse(student)
    assert words in str(err.value), str(err.value)
    assert "wrong values" not in str(err.value)


def test_coupling_inverse_reference_undoes_the_forward_map_and_the_library_layer():
    ref = exercises.normalizing_flows.reference_coupling_inverse
    exercises.check_coupling_inverse(ref)
    x, mask, net = exercises.normalizing_flows._coupling_inputs(torch.Generator().manual_seed(3))
    s, t = net(mask * x)
    z = mask * x + (1 - mask) * (x * s.exp() + t)
    torch.testing.assert_close(ref(z, mask, net), x)
    layer = _perturbed(lambda: nf.AffineCoupling([0, 1, 1, 0], hidden=8), seed=4)
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(ref(layer(x).z, layer.mask, layer.scale_and_shift), x)


def test_coupling_inverse_mistakes_are_told_apart():
    ex = exercises.normalizing_flows
    args = ex._coupling_inputs(torch.Generator().manual_seed(12345))
    outputs = [ex.reference_coupling_inverse(*args)] + [m.wrong(*args) for m in ex.INVERSE_MISTAKES]
    for i in range(len(outputs)):
        for j in range(i):
            assert not torch.allclose(outputs[i], outputs[j], atol=1e-3), (i, j)


# ------------------------------------------------- notebook 01's headline checks and their negative controls


def test_histogram_l1_accepts_the_change_of_variables_and_rejects_it_without_the_jacobian():
    """The notebook's 1D check (L1 < 0.06 with |f'|, > 0.4 without), on x = e^z and on x = z³."""
    z = torch.randn(20_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    normal = lambda u: torch.exp(-0.5 * u**2) / math.sqrt(2 * math.pi)  # noqa: E731
    edges = torch.linspace(0, 5, 51, dtype=torch.float64)
    with_jacobian = nf.histogram_l1(z.exp(), lambda x: normal(x.log()) / x, edges)
    without = nf.histogram_l1(z.exp(), lambda x: normal(x.log()), edges)
    assert with_jacobian < 0.06 and without > 0.4, (with_jacobian, without)
    # x = sinh z: f(x) = asinh x, |f'(x)| = 1/√(1 + x²), a second map with a different Jacobian
    edges = torch.linspace(-4, 4, 51, dtype=torch.float64)
    with_jacobian = nf.histogram_l1(torch.sinh(z), lambda x: normal(torch.asinh(x)) / (1 + x**2).sqrt(), edges)
    without = nf.histogram_l1(torch.sinh(z), lambda x: normal(torch.asinh(x)), edges)
    assert with_jacobian < 0.06 and without > 0.4, (with_jacobian, without)
    # the distance of a density to itself falls with the number of samples
    edges = torch.linspace(-3, 3, 31, dtype=torch.float64)
    few, many = (nf.histogram_l1(z[:n], normal, edges) for n in (1000, 20_000))
    assert many < few
    with pytest.raises(ValueError, match="increasing"):
        nf.histogram_l1(z, normal, torch.tensor([1.0, 0.0]))


def test_likelihood_gap_is_the_kl_divergence_in_closed_form():
    """NLL − entropy = KL(p ‖ q), estimated from samples of p, against the closed form for two Gaussians."""
    gen = torch.Generator().manual_seed(0)
    mu_p, L_p = torch.tensor([0.5, -0.2], dtype=torch.float64), torch.tensor([[1.2, 0.0], [0.4, 0.6]], dtype=torch.float64)
    mu_q, L_q = torch.tensor([-0.3, 0.1], dtype=torch.float64), torch.tensor([[0.9, 0.0], [-0.2, 1.1]], dtype=torch.float64)
    p = torch.distributions.MultivariateNormal(mu_p, scale_tril=L_p)
    q = torch.distributions.MultivariateNormal(mu_q, scale_tril=L_q)
    x = mu_p + torch.randn(50_000, 2, generator=gen, dtype=torch.float64) @ L_p.T
    gap = nf.likelihood_gap(q.log_prob, p.log_prob, x)
    exact = torch.distributions.kl_divergence(p, q).item()
    assert abs(gap.kl - exact) < 4 * gap.stderr and gap.stderr < 0.02, (gap, exact)
    assert gap.nll - gap.entropy == pytest.approx(gap.kl)
    assert gap.entropy == pytest.approx(p.entropy().item(), abs=0.03)
    assert nf.likelihood_gap(p.log_prob, p.log_prob, x).kl == 0  # the true density: no gap


@pytest.mark.parametrize("flow", ["identity planar", "identity RealNVP", "perturbed RealNVP"])
def test_likelihood_gap_check_fails_for_an_untrained_flow(flow):
    """Negative control for the notebook's moons check (−0.02 < KL < 0.3): a flow that has not learned the moons,
    the identity (every fresh layer, i.e. N(0, I)) or a random one, lies far above the floor."""
    make = {"identity planar": lambda: nf.PlanarFlow(2, 8).double(),
            "identity RealNVP": lambda: nf.RealNVP(2, 8, hidden=16).double(),
            "perturbed RealNVP": lambda: _perturbed(lambda: nf.RealNVP(2, 4, hidden=16), seed=5, scale=0.2)}[flow]
    model = make()
    x = data.moons(2000, generator=torch.Generator().manual_seed(10)).double()
    with torch.no_grad():
        gap = nf.likelihood_gap(model.log_prob, data.moons_log_prob, x)
    assert not (-0.02 < gap.kl < 0.3), gap
    if flow.startswith("identity"):  # N(0, I) on standardised data: NLL = log 2π + 1 up to sampling noise
        assert abs(gap.nll - (math.log(2 * math.pi) + 1)) < 0.1 and gap.kl > 0.8


def test_likelihood_gap_check_passes_for_a_trained_flow():
    """The positive side of the same check, on a flow that has learned its data (a Gaussian with known entropy)."""
    torch.manual_seed(0)
    flow = nf.RealNVP(2, 4, hidden=32)
    gen = torch.Generator().manual_seed(0)
    A = torch.tensor([[1.0, 0.0], [0.9, 0.3]])
    train.fit(flow, nf.nll_loss, lambda step: torch.randn(256, 2, generator=gen) @ A.T,
              train.TrainConfig(steps=150, lr=5e-3, progress=False))
    target = torch.distributions.MultivariateNormal(torch.zeros(2), A @ A.T)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1)) @ A.T
    with torch.no_grad():
        gap = nf.likelihood_gap(flow.log_prob, target.log_prob, x)
        gap0 = nf.likelihood_gap(nf.RealNVP(2, 4, hidden=32).log_prob, target.log_prob, x)
    assert -0.02 < gap.kl < 0.3 and gap0.kl > 0.3, (gap, gap0)


def test_paired_gap_is_less_noisy_than_the_entropy_only_for_a_close_model():
    """Notebook 01's check that the KL's standard error (paired on the same points) is below that of the entropy
    estimate: it holds for a model close to the moons (the true density, widened by 5 %), and fails for N(0, I),
    an untrained flow, whose log-density does not rise and fall with the data's."""
    x = data.moons(2000, generator=torch.Generator().manual_seed(10)).double()
    log_p = data.moons_log_prob(x)
    entropy_se = (log_p.std() / len(log_p) ** 0.5).item()
    close = nf.likelihood_gap(lambda v: data.moons_log_prob(v / 1.05) - 2 * math.log(1.05), data.moons_log_prob, x)
    with torch.no_grad():
        untrained = nf.likelihood_gap(nf.RealNVP(2, 4, hidden=16).double().log_prob, data.moons_log_prob, x)
    assert close.stderr < entropy_se and -0.02 < close.kl < 0.3, (close, entropy_se)
    assert not untrained.stderr < entropy_se, (untrained, entropy_se)


class _NoLogDetRealNVP(nf.RealNVP):
    """The classic bug: a flow whose log_prob forgets log |det ∂f/∂x|."""

    def _forward(self, x):
        z, log_det = super()._forward(x)
        return nf.FlowOutput(z, torch.zeros_like(log_det))


def test_mass_on_grid_catches_a_flow_that_forgot_its_log_det():
    """Negative control for notebook 01's normalisation check (|∫ p_θ − 1| < 0.01 on [−4, 4]²): trained on the moons,
    a flow without its log-det passes the likelihood-gap check, and only the mass on the grid gives it away."""
    x = data.moons(2000, generator=torch.Generator().manual_seed(10))
    results = {}
    for cls in (nf.RealNVP, _NoLogDetRealNVP):
        torch.manual_seed(0)
        flow = cls(2, 8, hidden=32, depth=2)
        gen = torch.Generator().manual_seed(1)
        train.fit(flow, nf.nll_loss, lambda step: data.moons(256, generator=gen),
                  train.TrainConfig(steps=300, lr=5e-3, progress=False))
        with torch.no_grad():
            results[cls] = (nf.likelihood_gap(flow.log_prob, data.moons_log_prob, x), nf.mass_on_grid(flow.log_prob))
    (gap, mass), (gap_bug, mass_bug) = results[nf.RealNVP], results[_NoLogDetRealNVP]
    assert gap.kl < 0.5 and abs(mass - 1) < 0.01, (gap, mass)
    assert -0.02 < gap_bug.kl < 0.3, gap_bug  # the gap alone is fooled
    assert abs(mass_bug - 1) > 1, mass_bug


def test_mass_on_grid_of_a_gaussian():
    gauss = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    assert abs(nf.mass_on_grid(gauss.log_prob) - 1) < 1e-3
    assert abs(nf.mass_on_grid(lambda p: gauss.log_prob(p) + math.log(2)) - 2) < 2e-3


def test_bits_per_dim():
    assert nf.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert nf.bits_per_dim(math.log(256), 1) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="positive integer"):
        nf.bits_per_dim(1.0, 0)
