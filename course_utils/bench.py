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

`python -m course_utils bench threads` is a separate benchmark, of CPU threads rather than of
peers: what `config.set_threads` should choose. It times one training step (forward, backward,
AdamW) of each model the course trains on a CPU,

    2d    RealNVP(dim=2, n_layers=8, hidden=64, depth=3) on the moons, batch 256 (notebook 01)
    dit   the tiny DiT, batch 64 on 28×28×1, the rectified-flow loss (notebook 10)
    unet  UNet(channels=32), batch 64 on 28×28×1 (notebooks 07b and 10)

with 1 thread and with every usable CPU, on the machine as it is ("quiet") and with one busy
competing process (`python -c "while True: pass"`, killed afterwards). Each measurement runs in a
fresh subprocess (threads are set before torch's first op, via `$COURSE_THREADS` and
`config.set_threads`) and reports the median of its timed steps; the configurations run in
turn, `--rounds` times, and the table shows the median over the rounds, in ms per step.
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
import subprocess
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["threads"]:
        return threads_main(argv[1:])
    if argv[:1] == [_WORKER]:
        return _threads_worker(argv[1:])
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


# --- threads: 1 thread or every CPU? (python -m course_utils bench threads) ----------------------

THREAD_MODELS = ("2d", "dit", "unet")
THREAD_WORKLOAD = {"2d": "2d", "dit": "image", "unet": "image"}  # the config.set_threads workload
THREAD_LABELS = {
    "2d": "RealNVP 2D, 8 couplings, batch {b}",
    "dit": "tiny DiT, 28×28, batch {b}",
    "unet": "U-Net, 28×28, batch {b}",
}
_WORKER = "_threads-worker"  # the hidden subcommand that times one configuration in a fresh process
BUSY_CODE = "while True: pass"


def _thread_batch(model: str, quick: bool) -> int:
    return ({"2d": 64, "dit": 4, "unet": 4} if quick else {"2d": 256, "dit": 64, "unet": 64})[model]


def _thread_step(model: str, quick: bool) -> Callable[[], object]:
    """One training step (forward, backward, AdamW) of `model`, as the notebooks train it."""
    n = _thread_batch(model, quick)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if model == "2d":
        from . import data
        from . import normalizing_flows as nf

        net = nf.RealNVP(dim=2, n_layers=8, hidden=16 if quick else 64, depth=3)
        opt = torch.optim.AdamW(net.parameters(), lr=5e-3, foreach=True)

        def loss():
            return nf.nll_loss(net, data.sample_toy("moons", n, generator=g))
    elif model == "dit":
        from . import flow_matching as fm
        from .models.dit import DiT, get_config

        net = DiT(get_config("tiny", **({"hidden": 32, "depth": 1} if quick else {})))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x1, y, path = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), fm.OTPath()

        def loss():
            x0 = torch.randn(x1.shape, generator=g)
            t = fm.sample_time(n, "logit_normal", generator=g)
            s = path.sample(x0, x1, t)
            return (net(s.x_t, t, y) - s.u_t).flatten(1).pow(2).sum(1).mean()
    elif model == "unet":
        from .models.unet import UNet

        net = UNet(channels=8 if quick else 32)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)

        def loss():
            t = torch.rand(n, generator=g)
            eps = torch.randn(x.shape, generator=g)
            return (net(x + eps, t, y) - eps).pow(2).mean()
    else:
        raise ValueError(f"unknown thread-benchmark model {model!r}: choose from {', '.join(THREAD_MODELS)}")
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        opt.step()
        return value

    return step


def _threads_worker(argv) -> int:
    """`_threads-worker MODEL WARMUP REPEATS [quick]`: in a fresh process, set the threads with
    `config.set_threads` (which reads `$COURSE_THREADS`, set by the parent) before any torch op,
    time the model's step, print one JSON line."""
    from . import config

    model, warmup, repeats = argv[0], int(argv[1]), int(argv[2])
    quick = argv[3:4] == ["quick"]
    threads = config.set_threads(THREAD_WORKLOAD[model])
    step = _thread_step(model, quick)
    times = time_interleaved([step], repeats, warmup)[0]
    print(json.dumps({"model": model, "threads": threads, "torch_threads": torch.get_num_threads(),
                      "times_ms": times}))
    return 0


def _spawn_busy() -> subprocess.Popen:
    """One competing process that keeps a core busy, as another kernel or a test run would."""
    return subprocess.Popen([sys.executable, "-c", BUSY_CODE], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def time_threads_config(model: str, threads: int, busy: bool, *, warmup: int, repeats: int,
                        quick: bool = False) -> float:
    """Median ms per step of `model` with `threads` threads, in a fresh subprocess, with or
    without one busy competing process running meanwhile."""
    env = {**os.environ, "COURSE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "course_utils.bench", _WORKER, model, str(warmup), str(repeats)]
    cmd += ["quick"] if quick else []
    competitor = _spawn_busy() if busy else None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if competitor is not None:
            _stop(competitor)
    if proc.returncode != 0:
        raise RuntimeError(f"the thread benchmark's worker for {model} with {threads} thread(s) failed:\n"
                           + proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["threads"] != threads or result["torch_threads"] != threads:
        raise RuntimeError(f"asked for {threads} thread(s), the worker ran with {result}")
    return statistics.median(result["times_ms"])


def threads(models=THREAD_MODELS, thread_counts=None, *, busy=(False, True), rounds: int = 3,
            repeats: int = 20, warmup: int = 3, quick: bool = False, log=None) -> list[dict]:
    """Time each model's training step with each thread count, quiet and with one busy process.

    `thread_counts` defaults to 1 and every usable CPU. The configurations run in turn, `rounds`
    times (so that load from elsewhere that drifts spreads over all of them); each row's `ms` is
    the median over the rounds of each run's median step. Returns one dict per configuration.
    """
    from . import config

    if thread_counts is None:
        thread_counts = sorted({1, config.usable_cpus()})
    configs = [(m, k, b) for m in models for b in busy for k in thread_counts]
    samples = {c: [] for c in configs}
    for r in range(rounds):
        for c in configs:
            samples[c].append(time_threads_config(*c, warmup=warmup, repeats=repeats, quick=quick))
            if log is not None:
                log(f"  round {r + 1}/{rounds}: {c[0]}, {c[1]} thread(s), {'busy' if c[2] else 'quiet'}: "
                    f"{samples[c][-1]:.1f} ms")
    smaller = " (quick: smaller)" if quick else ""
    return [{"model": m, "label": THREAD_LABELS[m].format(b=_thread_batch(m, quick)) + smaller, "threads": k,
             "busy": b, "ms": statistics.median(samples[(m, k, b)]), "rounds_ms": samples[(m, k, b)]}
            for (m, k, b) in configs]


def format_threads_table(rows: list[dict]) -> str:
    """One row per model, one column per (load, thread count), in ms per step."""
    columns = sorted(dict.fromkeys((r["busy"], r["threads"]) for r in rows))
    name = lambda b, k: f"{k} thread{'s' if k > 1 else ''}, {'1 busy proc' if b else 'quiet'}"  # noqa: E731
    header = ["model (ms/step)"] + [name(b, k) for b, k in columns]
    ms = {(r["model"], r["busy"], r["threads"]): r["ms"] for r in rows}
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        label = next(r["label"] for r in rows if r["model"] == model)
        lines.append([f"{model}: {label}"] + [f"{ms[(model, b, k)]:.1f}" if (model, b, k) in ms else "-"
                                              for b, k in columns])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(x) for x in lines])


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "?"


def threads_main(argv=None) -> int:
    """`python -m course_utils bench threads [options]`: the table of `threads()`."""
    from . import config

    p = argparse.ArgumentParser(prog="python -m course_utils bench threads",
                                description="time 1 thread against every CPU, quiet and with one busy process")
    p.add_argument("--models", default=",".join(THREAD_MODELS),
                   help=f"comma-separated subset of {','.join(THREAD_MODELS)}")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts (default: 1 and every usable CPU)")
    p.add_argument("--rounds", type=int, default=None,
                   help="fresh processes per configuration (median); default 3, 1 with --quick")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed steps per process (median); default 20, 3 with --quick")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per process first; default 3, 1 with --quick")
    p.add_argument("--no-busy", action="store_true", help="skip the runs with a busy competing process")
    p.add_argument("--quick", action="store_true", help="tiny models, one round (a smoke run, for the tests)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in THREAD_MODELS]
    if bad or not models:
        p.error(f"unknown model(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(THREAD_MODELS)}")
    counts = None
    if args.threads is not None:
        try:
            counts = sorted({int(k) for k in args.threads.split(",") if k.strip()})
        except ValueError:
            counts = []
        if not counts or counts[0] < 1:
            p.error("--threads must be comma-separated positive integers, e.g. 1,2")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if rounds < 1 or repeats < 1 or warmup < 0:
        p.error("--rounds and --repeats must be >= 1 and --warmup >= 0")
    busy = (False,) if args.no_busy else (False, True)
    before = _load()
    print(f"course_utils.bench threads: torch {torch.__version__}, {config.usable_cpus()} usable CPU(s), "
          f"~{config.physical_cores()} physical core(s); median over {rounds} fresh process(es) of the median "
          f"of {repeats} steps after {warmup} warm-up{', --quick sizes' if args.quick else ''}; "
          f"load average before: {before}", flush=True)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    rows = threads(models, counts, busy=busy, rounds=rounds, repeats=repeats, warmup=warmup, quick=args.quick, log=log)
    after = _load()
    print(format_threads_table(rows))
    chosen = {w: config._default_threads(w) for w in config.WORKLOADS}
    print(f"load average after: {after}. config.set_threads chooses here (without COURSE_THREADS): "
          + ", ".join(f"{w} -> {k}" for w, k in chosen.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "usable_cpus": config.usable_cpus(),
                       "physical_cores": config.physical_cores(), "rounds": rounds, "repeats": repeats,
                       "warmup": warmup, "quick": args.quick, "load_before": before, "load_after": after,
                       "chosen": chosen, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
