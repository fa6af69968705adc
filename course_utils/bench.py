"""Benchmark the course's implementations against their peers: `python -m course_utils bench`.

Four cases, each timed on the same network and the same data on both sides:

    ddim  the 50-step DDIM loop on 10,000 2D points with `TimeMLP(2, 128, 3)`
          (course: `GaussianDiffusion.sample(..., method="ddim")`; peer: diffusers' `DDIMScheduler`)
    cfm   one flow-matching training step, batch 256: forward, backward, Adam step
          (course: `flow_matching.cfm_loss` on `OTPath()`; peer: torchcfm's `ConditionalFlowMatcher(sigma=0)`)
    ot    the minibatch exact-OT pairing of 256 2D points
          (course: `flow_matching.ot_coupling`; peer: torchcfm's `OTPlanSampler("exact").sample_plan`)
    dit   one DiT training step, batch 128 on 28×28×1 with 10 classes: forward, backward, AdamW step
          (course: `models.dit.DiT`, tiny config; peer: diffusers' `DiTTransformer2DModel` of the same size)

Method: one process, `torch.set_num_threads(K)` fixed and reported; warm-up calls, then the
course and the peer run alternately (A B A B ...) and each side's time is the median of its N
calls. `peer/course` above 1 means the course is faster. Before timing, each case checks that
both sides compute the same thing (the same DDIM samples to 1e-4 of their scale, the same CFM
loss at the same t, the same OT cost); a failed check stops the benchmark. The course's tiny DiT
has QK-norm and diffusers' has none: `--dit-no-qk-norm` times the course's without it.

The peers are optional (`pip install course_utils[bench]`): without them the course side is
still timed and the row says so. This is a benchmark, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

CASES = ("ddim", "ddim-loop", "cfm", "ot", "dit")
NOT_INSTALLED = "peer not installed (pip install course_utils[bench])"


@dataclass(frozen=True)
class Sizes:
    """The workload of each case."""

    ddim_points: int = 10_000
    ddim_steps: int = 50
    cfm_batch: int = 256
    ot_batch: int = 256
    dit_batch: int = 128
    dit_qk_norm: bool = True  # the course's tiny DiT has QK-norm; diffusers' DiT has none


FULL, QUICK = Sizes(), Sizes(ddim_points=500, ddim_steps=10, cfm_batch=64, ot_batch=64, dit_batch=4)


@dataclass
class Case:
    """What a case's setup returns: the two callables to time (peer None when missing) and notes."""

    name: str
    label: str
    course: Callable[[], object]
    peer: Callable[[], object] | None = None
    peer_name: str | None = None
    peer_missing: str | None = None  # why there is no peer
    notes: dict = field(default_factory=dict)


@dataclass
class Row:
    case: str
    label: str
    course_ms: float
    peer_ms: float | None
    ratio: float | None
    peer: str | None
    peer_missing: str | None
    course_samples_ms: list
    peer_samples_ms: list | None
    notes: dict

    def to_json(self) -> dict:
        def iqr(xs):
            if not xs or len(xs) < 2:
                return None
            q = statistics.quantiles(xs, n=4)
            return [q[0], q[2]]

        d = dict(self.__dict__)
        d["course_iqr_ms"] = iqr(self.course_samples_ms)
        d["peer_iqr_ms"] = iqr(self.peer_samples_ms)
        return d


# --- peers -------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _import_peer(what: str):
    """(module objects, "name version") or raise ImportError."""
    if what == "diffusers":
        from diffusers import DDIMScheduler

        try:
            from diffusers import DiTTransformer2DModel
        except ImportError:  # diffusers < 0.28 built DiT as a Transformer2DModel with patches
            from diffusers import Transformer2DModel as DiTTransformer2DModel

        return {"DDIMScheduler": DDIMScheduler, "DiTTransformer2DModel": DiTTransformer2DModel}, \
            f"diffusers {_version('diffusers')}"
    if what == "torchcfm":
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
        from torchcfm.optimal_transport import OTPlanSampler

        return {"ConditionalFlowMatcher": ConditionalFlowMatcher, "OTPlanSampler": OTPlanSampler}, \
            f"torchcfm {_version('torchcfm')}"
    raise ValueError(what)


def _peer(what: str, use_peers: bool):
    if not use_peers:
        return None, None, "peer not run (--no-peers)"
    try:
        mods, name = _import_peer(what)
    except ImportError:
        return None, None, NOT_INSTALLED
    except Exception as e:  # installed but broken (e.g. a dependency of the wrong version)
        return None, None, f"peer failed to import ({type(e).__name__}: {str(e)[:80]})"
    return mods, name, None


# --- the cases ---------------------------------------------------------------------------------


class _LinearEps(torch.nn.Module):
    """ε̂(x, τ) = 0.1·x + τ: a network that costs almost nothing, so that the loop's own cost shows."""

    def forward(self, x, t):
        return 0.1 * x + t[:, None]


def setup_ddim_loop(sizes: Sizes, use_peers: bool) -> Case:
    """The sampler's own cost per step: the same DDIM loop as `ddim` with a near-free ε-model, 500 points."""
    case = setup_ddim(sizes, use_peers, net=_LinearEps(), points=min(sizes.ddim_points, 500))
    case.name, case.label = "ddim-loop", f"DDIM loop alone, {sizes.ddim_steps} steps, {min(sizes.ddim_points, 500)} points"
    return case


def setup_ddim(sizes: Sizes, use_peers: bool, net=None, points=None) -> Case:
    from . import diffusion, schedules
    from .models import TimeMLP

    T, steps, n = 1000, sizes.ddim_steps, points or sizes.ddim_points
    torch.manual_seed(0)
    if net is None:
        net = TimeMLP(2, hidden=128, depth=3).eval()
        for p in net.parameters():
            p.requires_grad_(False)
    x_T = torch.randn(n, 2)
    gd = diffusion.GaussianDiffusion(schedules.DiscreteSchedule.linear(T))

    def course_sample(x):  # the network sees τ = t/T
        return gd.sample(net, x, steps=steps, method="ddim").x

    case = Case("ddim", f"DDIM {steps} steps, {n:,} 2D points", lambda: course_sample(x_T))

    mods, case.peer_name, case.peer_missing = _peer("diffusers", use_peers)
    if mods is None:
        return case
    # Diffusers indexes its tables from 0: its betas[k] is the course's β_{k+1} (the course's
    # β_0 = 0 is the data), so its alphas_cumprod[k] = the course's ᾱ_{k+1}. "trailing" spacing
    # gives k = 999, 979, ..., 19 = the course's t − 1 for t = 1000, 980, ..., 20, and the last
    # step goes to k = −1, i.e. ᾱ = 1 with set_alpha_to_one=True (the course's ᾱ_0 = 1). The
    # network therefore sees τ = (k + 1)/T, the same τ = t/T as on the course side.
    betas = gd.schedule.betas[1:].numpy()
    scheduler = mods["DDIMScheduler"](
        num_train_timesteps=T, beta_schedule="linear", trained_betas=betas, clip_sample=False,
        set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon",
    )

    @torch.no_grad()
    def peer_sample(x):
        scheduler.set_timesteps(steps)
        for k in scheduler.timesteps:
            eps = net(x, ((k + 1) / T).expand(x.shape[0]))
            x = scheduler.step(eps, k, x).prev_sample
        return x

    case.peer = lambda: peer_sample(x_T)
    # An untrained ε-network makes x̂_0 = (x_T − √(1 − ᾱ_T) ε̂)/√ᾱ_T large (|x| ~ 10²), so the
    # samples are compared relative to their scale; the rest is float32 rounding (diffusers keeps
    # its tables in float32, the course builds them in float64).
    a, b = course_sample(x_T), peer_sample(x_T)
    diff = (a - b).abs().max().item()
    rel = diff / max(1.0, a.abs().max().item())
    case.notes["max |course − peer| of the samples"] = diff
    case.notes["the same, relative to max |sample|"] = rel
    if not rel < 1e-4:
        raise AssertionError(f"DDIM: the course's and diffusers' samples differ by {diff:.2e} "
                             f"({rel:.2e} of their scale, > 1e-4): the comparison would not be fair.")
    return case


def _cfm_data(n: int):
    from . import data

    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, generator=g), data.sample_toy("moons", n, generator=g).float()


def setup_cfm(sizes: Sizes, use_peers: bool) -> Case:
    from . import flow_matching as fm
    from .models import TimeMLP

    n = sizes.cfm_batch
    torch.manual_seed(0)
    model = TimeMLP(2, hidden=128, depth=3)
    x0, x1 = _cfm_data(n)
    path = fm.OTPath()
    course_model = copy.deepcopy(model)
    course_opt = torch.optim.Adam(course_model.parameters(), lr=1e-3)

    def course_step():
        course_opt.zero_grad(set_to_none=True)
        loss = fm.cfm_loss(course_model, path, x0, x1)
        loss.backward()
        course_opt.step()
        return loss

    case = Case("cfm", f"CFM train step (fwd+bwd+Adam), batch {n}", course_step)
    mods, case.peer_name, case.peer_missing = _peer("torchcfm", use_peers)
    if mods is None:
        return case
    matcher = mods["ConditionalFlowMatcher"](sigma=0.0)
    peer_model = copy.deepcopy(model)
    peer_opt = torch.optim.Adam(peer_model.parameters(), lr=1e-3)

    def peer_loss(m, t=None):
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1, t)
        return (m(xt, t) - ut).pow(2).flatten(1).sum(1).mean()  # the course's loss: sum over D, mean over B

    def peer_step():
        peer_opt.zero_grad(set_to_none=True)
        loss = peer_loss(peer_model)
        loss.backward()
        peer_opt.step()
        return loss

    case.peer = peer_step
    t = torch.rand(n, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = abs(fm.cfm_loss(model, path, x0, x1, t=t).item() - peer_loss(model, t).item())
    case.notes["|course − peer| loss at the same t"] = diff
    if not diff < 1e-5:
        raise AssertionError(f"CFM: the course's and torchcfm's losses differ by {diff:.2e} at the same t.")
    return case


def setup_ot(sizes: Sizes, use_peers: bool) -> Case:
    from . import flow_matching as fm

    n = sizes.ot_batch
    x0, x1 = _cfm_data(n)
    case = Case("ot", f"exact minibatch OT pairing, batch {n}, 2D", lambda: fm.ot_coupling(x0, x1))
    mods, case.peer_name, case.peer_missing = _peer("torchcfm", use_peers)
    if mods is None:
        return case
    sampler = mods["OTPlanSampler"](method="exact")
    case.peer = lambda: sampler.sample_plan(x0, x1)  # the plan, then B pairs drawn from it (with replacement)
    a, b = fm.ot_coupling(x0, x1)
    course_cost = (a - b).pow(2).sum(1).mean().item()
    plan = torch.as_tensor(sampler.get_map(x0, x1), dtype=torch.float64)
    peer_cost = (plan * torch.cdist(x0.double(), x1.double()).pow(2)).sum().item()
    case.notes["OT cost course / peer plan"] = [course_cost, peer_cost]
    if not abs(course_cost - peer_cost) <= 1e-4 * max(1.0, peer_cost):
        raise AssertionError(f"OT: the course's pairing costs {course_cost:.6f}, torchcfm's plan {peer_cost:.6f}.")
    return case


def setup_dit(sizes: Sizes, use_peers: bool) -> Case:
    from .models.dit import DiT, get_config, num_params

    n = sizes.dit_batch
    cfg = get_config("tiny", qk_norm=sizes.dit_qk_norm)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.rand(n, generator=g)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    target = torch.randn(x.shape, generator=g)
    torch.manual_seed(0)
    course_model = DiT(cfg).train()
    course_opt = torch.optim.AdamW(course_model.parameters(), lr=1e-4)

    def course_step():
        course_opt.zero_grad(set_to_none=True)
        loss = (course_model(x, t, y) - target).pow(2).mean()
        loss.backward()
        course_opt.step()
        return loss

    qk = "" if cfg.qk_norm else ", course without QK-norm"
    case = Case("dit", f"DiT train step (fwd+bwd+AdamW), batch {n}{qk}", course_step)
    case.notes["params course"] = num_params(course_model)
    mods, case.peer_name, case.peer_missing = _peer("diffusers", use_peers)
    if mods is None:
        return case
    heads = cfg.heads
    torch.manual_seed(0)
    peer_model = mods["DiTTransformer2DModel"](
        num_attention_heads=heads, attention_head_dim=cfg.hidden // heads, in_channels=cfg.in_channels,
        out_channels=cfg.in_channels, num_layers=cfg.depth, sample_size=cfg.image_size,
        patch_size=cfg.patch_size, num_embeds_ada_norm=cfg.num_classes, norm_type="ada_norm_zero",
    ).train()
    peer_opt = torch.optim.AdamW(peer_model.parameters(), lr=1e-4)
    t_peer = t * 1000  # diffusers' DiT embeds timesteps on 0..1000; the course's sees τ in [0, 1]

    def peer_step():
        peer_opt.zero_grad(set_to_none=True)
        out = peer_model(x, timestep=t_peer, class_labels=y).sample
        loss = (out - target).pow(2).mean()
        loss.backward()
        peer_opt.step()
        return loss

    case.peer = peer_step
    case.notes["params peer"] = num_params(peer_model)
    if peer_step().shape != () or course_model(x, t, y).shape != x.shape:
        raise AssertionError("DiT: unexpected output shape.")
    return case


SETUPS = {"ddim": setup_ddim, "ddim-loop": setup_ddim_loop, "cfm": setup_cfm, "ot": setup_ot, "dit": setup_dit}


# --- timing -------------------------------------------------------------------------------------


def time_interleaved(fns: list[Callable[[], object]], repeats: int, warmup: int) -> list[list[float]]:
    """Call each of `fns` in turn (A B A B ...), `warmup` rounds untimed then `repeats` timed;
    returns each one's times in ms. The garbage collector is off while timing."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                start = time.perf_counter_ns()
                fn()
                times[i].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return times


def run_case(name: str, sizes: Sizes, repeats: int, warmup: int, use_peers: bool) -> Row:
    case = SETUPS[name](sizes, use_peers)
    fns = [case.course] + ([case.peer] if case.peer is not None else [])
    times = time_interleaved(fns, repeats, warmup)
    course_ms = statistics.median(times[0])
    peer_ms = statistics.median(times[1]) if case.peer is not None else None
    ratio = peer_ms / course_ms if peer_ms is not None else None
    if case.peer is not None:
        # each peer call against the course call just before it: robust to load that drifts over a run
        case.notes["peer/course, median of paired calls"] = statistics.median(
            b / a for a, b in zip(times[0], times[1]))
        case.notes["peer/course of the fastest calls"] = min(times[1]) / min(times[0])
    return Row(name, case.label, course_ms, peer_ms, ratio, case.peer_name, case.peer_missing,
               times[0], times[1] if case.peer is not None else None, case.notes)


# --- output -------------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    header = ["case", "course ms", "peer ms", "peer/course"]
    lines = []
    for r in rows:
        peer = f"{r.peer_ms:.3f}" if r.peer_ms is not None else r.peer_missing
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append([f"{r.case}: {r.label}", f"{r.course_ms:.3f}", peer, ratio])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    return "\n".join(out)


def format_notes(rows: list[Row]) -> str:
    out = []
    for r in rows:
        if r.peer:
            out.append(f"{r.case}: peer = {r.peer}")
        for k, v in r.notes.items():
            if isinstance(v, float):
                v = f"{v:.3g}"
            elif isinstance(v, list):
                v = " / ".join(f"{x:.6g}" for x in v)
            elif isinstance(v, int):
                v = f"{v:,}"
            out.append(f"{r.case}: {k} = {v}")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m course_utils bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=None, help="timed calls per side (median); default 30, 3 with --quick")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per side first; default 3, 1 with --quick")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's current setting)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="few repeats and small sizes (a smoke run, for the tests)")
    p.add_argument("--no-peers", action="store_true", help="time the course side only")
    p.add_argument("--dit-no-qk-norm", action="store_true",
                   help="build the course's DiT without QK-norm, the architecture of diffusers' DiT")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        p.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(CASES)}")
    args.cases = cases
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = QUICK if args.quick else FULL
    if args.dit_no_qk_norm:
        sizes = dataclasses.replace(sizes, dit_qk_norm=False)
    print(f"course_utils.bench: torch {torch.__version__}, {threads} thread(s) (torch.set_num_threads), "
          f"{os.cpu_count()} CPU(s), median of {args.repeats} interleaved calls after {args.warmup} warm-up"
          f"{', --quick sizes' if args.quick else ''}", flush=True)
    rows = []
    for name in args.cases:
        rows.append(run_case(name, sizes, args.repeats, args.warmup, not args.no_peers))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    print(format_table(rows))
    print("peer/course > 1: the course is faster.")
    notes = format_notes(rows)
    if notes:
        print(notes)
    if args.json:
        result = {
            "torch": torch.__version__, "threads": threads, "cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
            "sizes": dataclasses.asdict(sizes), "rows": [r.to_json() for r in rows],
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
