#!/usr/bin/env python3
"""Writes the sampling goldens in tests/data/goldens/ (randn.txt, sigmas.txt, samplers.txt).

Run from the repository root (developers only; CI never runs Python):

    /opt/refenv/bin/python tests/reference/make_sampling_goldens.py

Needs torch, numpy, scipy and the k-diffusion package (installed --no-deps: its sampling.py is
loaded by path with stand-ins for the modules it imports but these goldens never use).

* randn.txt    torch.randn on the CPU after torch.manual_seed, bit patterns (float32 as hex).
* sigmas.txt   ComfyUI's nine schedulers over the SD1 discrete schedule, written here in torch
               after comfy/samplers.py and comfy/model_sampling.py, in ComfyUI's float32 ops;
               plus KSampler's denoise handling and KSamplerAdvanced's step ranges.
* samplers.txt whole 6-step runs in float64 on a 1x4x2x3 latent with an analytic denoiser:
               k-diffusion's own sampling functions where ComfyUI's version is the same
               computation, transcriptions of ComfyUI's ddpm, lcm and uni_pc (not in
               k-diffusion), and ComfyUI's lms loop (its last step returns the prediction;
               k-diffusion's integrates to 0) around k-diffusion's LMS coefficients.
"""
import importlib.util
import math
import os
import sys
import types

import numpy as np
import scipy.stats
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "goldens")


def k_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    pkg_dir = os.path.dirname(spec.origin) if spec and spec.origin else list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("kdiff")
    pkg.__path__ = [pkg_dir]
    utils = types.ModuleType("kdiff.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules["kdiff"] = pkg
    sys.modules["kdiff.utils"] = utils
    sys.modules.setdefault("torchdiffeq", types.SimpleNamespace(odeint=None))
    sspec = importlib.util.spec_from_file_location("kdiff.sampling", os.path.join(pkg_dir, "sampling.py"))
    mod = importlib.util.module_from_spec(sspec)
    sys.modules["kdiff.sampling"] = mod
    sspec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- randn

def f32_hex(v):
    return "%08x" % np.float32(v).view(np.uint32)


def write_randn():
    # (seed, shapes of successive draws on one generator, indices to record or None for all)
    cases = [
        (0, [[1]], None), (0, [[15]], None), (0, [[16]], None), (0, [[17]], None), (0, [[100]], None),
        (1, [[1, 4, 8, 8]], None), (1, [[1], [4], [8], [8]], None), (42, [[256]], None),
        (42, [[3], [5], [40], [7]], None), (2**32 + 5, [[33]], None), (2**63 - 1, [[31]], None),
        (2**64 - 1, [[18]], None), (123456789, [[1]], None), (7, [[15], [15]], None),
        (7, [[2], [16], [1]], None),
    ]
    big_idx = sorted(set(list(range(32)) + list(range(32768 - 32, 32768)) + list(range(0, 32768, 1999))))
    cases.append((42, [[2, 4, 64, 64]], big_idx))
    cases.append((2**63 - 1, [[4 * 64 * 64 + 5]], sorted(set(list(range(40)) + list(range(16389 - 40, 16389))))))
    lines = ["# torch.randn(shape, generator=torch.manual_seed(seed)) float32 on the CPU, torch " + torch.__version__,
             "# case <seed> <element counts of successive draws, comma separated> <k>;"
             " then k lines: <index into the concatenated draws> <float32 bits hex>"]
    for seed, shapes, idx in cases:
        g = torch.manual_seed(seed)
        vals = torch.cat([torch.randn(sh, generator=g).flatten() for sh in shapes]).numpy()
        idx = range(len(vals)) if idx is None else idx
        lines.append("case %d %s %d" % (seed, ",".join(str(math.prod(sh)) for sh in shapes), len(idx)))
        lines += ["%d %s" % (i, f32_hex(vals[i])) for i in idx]
    # prepare_noise with batch_index: one [1, 4, 3, 5] draw per index up to the largest.
    for seed, inds in [(5, [2, 0, 2]), (9, [1])]:
        g = torch.manual_seed(seed)
        draws = [torch.randn([1, 4, 3, 5], generator=g) for _ in range(max(inds) + 1)]
        vals = torch.cat([draws[i] for i in inds]).flatten().numpy()
        lines.append("batch_index %d %s 60 %d" % (seed, ",".join(map(str, inds)), len(vals)))
        lines += ["%d %s" % (i, f32_hex(v)) for i, v in enumerate(vals)]
    with open(os.path.join(OUT, "randn.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- schedules (after ComfyUI)

class ModelSamplingDiscrete:
    def __init__(self, timesteps=1000, linear_start=0.00085, linear_end=0.012):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=(len(self.sigmas) - 1))
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def sched_simple(s, steps):
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def sched_ddim_uniform(s, steps):
    x = 1
    if math.isclose(float(s.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(s.sigmas) // steps, 1)
    while x < len(s.sigmas):
        sigs.append(float(s.sigmas[x]))
        x += ss
    return torch.FloatTensor(sigs[::-1])


def sched_normal(s, steps, sgm=False):
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        ts = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        ts = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(t)) for t in ts]
    return torch.FloatTensor(sigs + ([0.0] if append_zero else []))


def sched_beta(s, steps, alpha=0.6, beta=0.6):
    total = len(s.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs.append(float(s.sigmas[int(t)]))
        last = t
    return torch.FloatTensor(sigs + [0.0])


def sched_linear_quadratic(s, steps, threshold_noise=0.025):
    if steps == 1:
        sched = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        q_steps = steps - linear_steps
        q_coef = diff / (linear_steps * q_steps ** 2)
        l_coef = threshold_noise / linear_steps - 2 * diff / (q_steps ** 2)
        const = q_coef * (linear_steps ** 2)
        quad = [q_coef * (i ** 2) + l_coef * i + const for i in range(linear_steps, steps)]
        sched = [1.0 - x for x in lin + quad + [1.0]]
    return torch.FloatTensor(sched) * s.sigma_max


def sched_kl_optimal(n, sigma_min, sigma_max):
    adj = torch.arange(n, dtype=torch.float).div_(n - 1)
    sig = adj.new_zeros(n + 1)
    sig[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sig


def karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(max_inv + ramp * (min_inv - max_inv)) ** rho, torch.zeros(1)])


def exponential(n, sigma_min, sigma_max):
    return torch.cat([torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp(), torch.zeros(1)])


def calculate_sigmas(s, name, steps):
    smin, smax = float(s.sigma_min), float(s.sigma_max)
    return {
        "normal": lambda: sched_normal(s, steps),
        "karras": lambda: karras(steps, smin, smax),
        "exponential": lambda: exponential(steps, smin, smax),
        "sgm_uniform": lambda: sched_normal(s, steps, sgm=True),
        "simple": lambda: sched_simple(s, steps),
        "ddim_uniform": lambda: sched_ddim_uniform(s, steps),
        "beta": lambda: sched_beta(s, steps),
        "linear_quadratic": lambda: sched_linear_quadratic(s, steps),
        "kl_optimal": lambda: sched_kl_optimal(steps, smin, smax),
    }[name]()


DISCARD_PENULTIMATE = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


def ksampler_sigmas(s, scheduler, sampler, steps, denoise=1.0):
    def calc(st):
        if sampler in DISCARD_PENULTIMATE:
            sig = calculate_sigmas(s, scheduler, st + 1)
            return torch.cat([sig[:-2], sig[-1:]])
        return calculate_sigmas(s, scheduler, st)
    if denoise > 0.9999:
        return calc(steps)
    return calc(int(steps / denoise))[-(steps + 1):]


def step_range(sigmas, start_step, last_step, force_full_denoise):
    sigmas = sigmas.clone()
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1]
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas


SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
              "linear_quadratic", "kl_optimal"]


def fmt(vals):
    return " ".join("%.9g" % float(v) for v in vals)


def write_sigmas(s):
    lines = ["# ComfyUI sigma schedules over the SD1 schedule (betas 0.00085..0.012, 1000 steps), float32",
             "# model <index>:<sigma> ...  (a sample of the model's 1000 float32 sigmas)",
             "# sched <scheduler> <steps> <count> <values>      (comfy.samplers.calculate_sigmas)",
             "# ksampler <scheduler> <sampler> <steps> <denoise> <count> <values>  (KSampler.set_steps)",
             "# range <scheduler> <steps> <start_step> <last_step> <force_full_denoise> <count> <values>"
             "  (KSamplerAdvanced; -1 = not given; count 0 = nothing to run)",
             "model %s" % " ".join("%d:%.9g" % (i, float(s.sigmas[i])) for i in list(range(0, 1000, 37)) + [1, 998, 999])]
    for name in SCHEDULERS:
        for steps in [1, 2, 3, 6, 7, 10, 25]:
            if name == "kl_optimal" and steps == 1:
                continue  # ComfyUI divides 0 by 0 there (documented in docs/sampling.md)
            sig = calculate_sigmas(s, name, steps)
            lines.append("sched %s %d %d %s" % (name, steps, len(sig), fmt(sig)))
    for name in SCHEDULERS:
        for sampler, steps, denoise in [("euler", 6, 1.0), ("euler", 6, 0.6), ("dpm_2", 6, 1.0),
                                        ("uni_pc", 10, 0.75), ("dpmpp_2m", 20, 0.3), ("euler", 5, 0.99995)]:
            sig = ksampler_sigmas(s, name, sampler, steps, denoise)
            lines.append("ksampler %s %s %d %s %d %s" % (name, sampler, steps, repr(denoise), len(sig), fmt(sig)))
    base = calculate_sigmas(s, "karras", 10)
    for start, last, force in [(-1, -1, 1), (3, -1, 1), (0, 6, 1), (0, 6, 0), (2, 8, 1), (9, -1, 1),
                               (10, -1, 1), (4, 4, 1), (-1, 10000, 1)]:
        r = step_range(base, None if start < 0 else start, None if last < 0 else last, bool(force))
        vals = [] if r is None else r
        lines.append("range karras 10 %d %d %d %d %s" % (start, last, force, len(vals), fmt(vals)))
    with open(os.path.join(OUT, "sigmas.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- samplers

SHAPE = [1, 4, 2, 3]
NOISE_SEED = 1234


def denoiser(x, sigma):
    """The analytic stand-in for a model: D(x, sigma) = x / (1 + sigma^2) + 0.25 tanh(2x) / (1 + sigma)."""
    sigma = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
    return x / (1.0 + sigma * sigma) + 0.25 * torch.tanh(2.0 * x) / (1.0 + sigma)


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        return self.fn(x, sigma)


class SeededNoise:
    """ComfyUI's default noise sampler on the CPU: randn(x.shape) from torch.manual_seed(seed + 1)."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.calls = 0

    def __call__(self, sigma, sigma_next):
        self.calls += 1
        return torch.randn(SHAPE, generator=self.gen).double()


def sample_ddpm(model, x, sigmas, noise_sampler):
    for i in range(len(sigmas) - 1):
        s, sp = sigmas[i], sigmas[i + 1]
        den = model(x, s)
        eps = (x - den) / s
        xs = x / torch.sqrt(1.0 + s ** 2.0)
        ac, acp = 1 / (s * s + 1), 1 / (sp * sp + 1)
        alpha = ac / acp
        mu = (1.0 / alpha).sqrt() * (xs - (1 - alpha) * eps / (1 - ac).sqrt())
        if sp > 0:
            mu = mu + ((1 - alpha) * (1.0 - acp) / (1.0 - ac)).sqrt() * noise_sampler(s, sp)
        x = mu
        if sp != 0:
            x = x * torch.sqrt(1.0 + sp ** 2.0)
    return x


def sample_lms(K, model, x, sigmas, order=4):
    """ComfyUI's sample_lms: k-diffusion's, except that the last step (to sigma 0) returns the
    denoised prediction instead of integrating to 0; coefficients from k-diffusion."""
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds.append(K.to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [K.linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
            x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return x


def sample_lcm(model, x, sigmas, noise_sampler):
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


def sample_unipc(model, x, sigmas, variant):
    """comfy/extra_samplers/uni_pc.py sample_unipc (multistep, predict_x0, time = sigma)."""
    t = sigmas.clone()
    if t[-1] == 0:
        t[-1] = 0.001
    lmc = lambda s: 0.5 * torch.log(1 / (s * s + 1))
    alpha = lambda s: torch.exp(lmc(s))
    std = lambda s: torch.sqrt(1.0 - torch.exp(2.0 * lmc(s)))
    lam = lambda s: lmc(s) - 0.5 * torch.log(1.0 - torch.exp(2.0 * lmc(s)))

    def model_fn(xv, s):
        inp = xv * (s * s + 1.0) ** 0.5
        eps = (inp - model(inp, s)) / s
        return (xv - std(s) * eps) / alpha(s)

    def update(xv, models, ts, tt, order, use_corrector):
        t0, m0 = ts[-1], models[-1]
        h = lam(tt) - lam(t0)
        rks, d1s = [], []
        for i in range(1, order):
            rk = (lam(ts[-(i + 1)]) - lam(t0)) / h
            rks.append(float(rk))
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, dtype=torch.float64)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        b_h = hh if variant == "bh1" else torch.expm1(hh)
        h_phi_k = torch.expm1(hh) / hh - 1
        fact = 1
        R, b = [], []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R = torch.stack(R)
        b = torch.tensor([float(v) for v in b], dtype=torch.float64)
        if d1s:
            rhos_p = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        if use_corrector:
            rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(R, b)
        x_t_ = std(tt) / std(t0) * xv - alpha(tt) * h_phi_1 * m0
        pred = sum(d * r for d, r in zip(d1s, rhos_p)) if d1s else 0
        x_t = x_t_ - alpha(tt) * b_h * pred
        model_t = None
        if use_corrector:
            model_t = model_fn(x_t, tt)
            corr = sum(d * r for d, r in zip(d1s, rhos_c[:-1])) if d1s else 0
            x_t = x_t_ - alpha(tt) * b_h * (corr + rhos_c[-1] * (model_t - m0))
        return x_t, model_t

    x = x / torch.sqrt(1.0 + t[0] ** 2.0)
    steps = len(t) - 1
    order = min(3, len(t) - 2)
    for idx in range(steps):
        if idx == 0:
            models, ts = [model_fn(x, t[0])], [t[0]]
        elif idx < order:
            x, m = update(x, models, ts, t[idx], idx, True)
            models.append(m)
            ts.append(t[idx])
        else:
            for step in range(idx, idx + 1 + (1 if idx == steps - 1 else 0)):
                so = min(order, steps + 1 - step)
                x, m = update(x, models, ts, t[step], so, step != steps)
                for i in range(order - 1):
                    ts[i], models[i] = ts[i + 1], models[i + 1]
                ts[-1] = t[step]
                if step < steps:
                    models[-1] = m if m is not None else model_fn(x, t[step])
    return x / alpha(t[-1])


def inpaint_wrap(model, latent, noise, mask):
    """KSamplerX0Inpaint for eps models."""
    def wrapped(x, sigma, **kwargs):
        s = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        xi = x * mask + (noise * s + latent) * (1.0 - mask)
        return model(xi, sigma) * mask + latent * (1.0 - mask)
    return wrapped


def run_sampler(K, name, sigmas, x, model, noise):
    if name in ("euler", "ddim"):
        return K.sample_euler(model, x, sigmas, disable=True)
    if name == "heun":
        return K.sample_heun(model, x, sigmas, disable=True)
    if name == "dpm_2":
        return K.sample_dpm_2(model, x, sigmas, disable=True)
    if name == "lms":
        return sample_lms(K, model, x, sigmas)
    if name == "dpmpp_2m":
        return K.sample_dpmpp_2m(model, x, sigmas, disable=True)
    if name in ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                "dpmpp_3m_sde"):
        return getattr(K, "sample_" + name)(model, x, sigmas, disable=True, noise_sampler=noise)
    if name == "ddpm":
        return sample_ddpm(model, x, sigmas, noise)
    if name == "lcm":
        return sample_lcm(model, x, sigmas, noise)
    if name in ("uni_pc", "uni_pc_bh2"):
        return sample_unipc(model, x, sigmas, "bh1" if name == "uni_pc" else "bh2")
    raise ValueError(name)


SAMPLER_RUNS = [  # (sampler, scheduler, steps, denoise, latent kind, mask)
    ("euler", "normal", 6, 1.0, "zero", False),
    ("euler", "karras", 6, 1.0, "zero", False),
    ("euler_ancestral", "normal", 6, 1.0, "zero", False),
    ("heun", "normal", 6, 1.0, "zero", False),
    ("dpm_2", "normal", 6, 1.0, "zero", False),
    ("dpm_2_ancestral", "normal", 6, 1.0, "zero", False),
    ("lms", "normal", 6, 1.0, "zero", False),
    ("dpmpp_2s_ancestral", "normal", 6, 1.0, "zero", False),
    ("dpmpp_sde", "normal", 6, 1.0, "zero", False),
    ("dpmpp_2m", "karras", 6, 1.0, "zero", False),
    ("dpmpp_2m", "normal", 6, 1.0, "zero", False),
    ("dpmpp_2m_sde", "karras", 6, 1.0, "zero", False),
    ("dpmpp_3m_sde", "karras", 6, 1.0, "zero", False),
    ("ddpm", "normal", 6, 1.0, "zero", False),
    ("lcm", "normal", 6, 1.0, "zero", False),
    ("ddim", "ddim_uniform", 6, 1.0, "zero", False),
    ("uni_pc", "normal", 6, 1.0, "zero", False),
    ("uni_pc_bh2", "karras", 6, 1.0, "zero", False),
    ("uni_pc", "normal", 2, 1.0, "zero", False),
    ("euler", "normal", 6, 0.6, "image", False),
    ("dpmpp_2m", "karras", 6, 0.5, "image", False),
    ("euler", "normal", 6, 1.0, "image", True),
]


def write_samplers(s):
    K = k_sampling()
    noise = torch.randn(SHAPE, generator=torch.manual_seed(NOISE_SEED)).double()
    image = (torch.arange(24, dtype=torch.float64).reshape(SHAPE) % 7 - 3) / 4.0  # deterministic "latent"
    mask = ((torch.arange(24).reshape(SHAPE) % 6) < 3).double()
    smax = float(s.sigma_max)
    lines = ["# whole sampler runs in float64: latent shape 1x4x2x3, analytic denoiser",
             "#   D(x, sigma) = x / (1 + sigma^2) + 0.25 * tanh(2 x) / (1 + sigma)",
             "# initial noise: torch.randn(shape, generator=torch.manual_seed(%d)) (float32);" % NOISE_SEED,
             "# noise for ancestral/SDE steps: successive torch.randn(shape) from torch.manual_seed(seed + 1), seed %d;" % NOISE_SEED,
             "# 'image' latent: ((i % 7) - 3) / 4 for element i; mask: 1 where (i % 6) < 3",
             "# run <sampler> <scheduler> <steps> <denoise> <latent zero|image> <mask 0|1> <denoiser calls> <noise calls> <n sigmas> <sigmas>",
             "# then one line: out <24 values>"]
    for sampler, sched, steps, denoise, latent_kind, use_mask in SAMPLER_RUNS:
        sig = ksampler_sigmas(s, sched, sampler, steps, denoise).double()
        latent = torch.zeros(SHAPE, dtype=torch.float64) if latent_kind == "zero" else image
        s0 = float(sig[0])
        max_denoise = math.isclose(smax, s0, rel_tol=1e-05) or s0 > smax
        x = noise * (math.sqrt(1.0 + s0 * s0) if max_denoise else s0) + latent
        model = Counted(denoiser)
        inner = model
        if use_mask:
            inpaint_noise = noise
            if sampler == "ddim":
                inpaint_noise = torch.randn(SHAPE, generator=torch.manual_seed(NOISE_SEED + 1)).double()
            inner = inpaint_wrap(model, latent, inpaint_noise, mask)
        ns = SeededNoise(NOISE_SEED)
        out = run_sampler(K, sampler, sig, x, inner, ns)
        lines.append("run %s %s %d %s %s %d %d %d %d %s" % (sampler, sched, steps, repr(denoise), latent_kind,
                                                            int(use_mask), model.calls, ns.calls, len(sig), fmt(sig)))
        lines.append("out " + " ".join("%.10g" % v for v in out.flatten().tolist()))
    with open(os.path.join(OUT, "samplers.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    s = ModelSamplingDiscrete()
    write_randn()
    write_sigmas(s)
    write_samplers(s)


if __name__ == "__main__":
    main()
