#!/usr/bin/python3
"""Writes tests/data/goldens/samplers_ext.txt: whole runs of the samplers sdflow added after the
first sixteen (CFG++ variants, res_multistep, gradient_estimation, ipndm, heunpp2,
exp_heun_2_x0(_sde), dpmpp_2m_sde_heun, the _gpu names, dpm_fast, dpm_adaptive, deis, er_sde,
seeds_2, seeds_3, sa_solver(_pece)), each re-implemented here in float64 numpy after ComfyUI's
comfy/k_diffusion/sampling.py, deis.py and sa_solver.py (read, not copied), on an analytic model.

Run from the repository root (developers only; CI never runs Python; needs numpy only):

    python3 tests/reference/make_sampler_ext_goldens.py

The model is exact: data of the "cond" and "uncond" predictions are independent Gaussians per
element, x0 ~ N(mu, s^2), whose optimal denoiser is D(x, sigma) = (s^2 x + sigma^2 mu) /
(s^2 + sigma^2). The guided prediction is D_u + (D_c - D_u) * CFG, as ComfyUI's cfg_function.
Noise (the initial noise and every draw of the ancestral/SDE steps) is written into the file as
float32 values, so the C test feeds the very same numbers.
"""
import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "goldens", "samplers_ext.txt")

N = 24
IDX = np.arange(N)
MU_C = ((IDX % 5) - 2) * 0.3
MU_U = ((IDX % 3) - 1) * 0.2
S_C, S_U = 0.7, 1.1
CFG = 2.5
SIGMA_MAX = float(np.float32(14.614640235900879))  # SD1's sigma_max as float32
SIGMA_MIN = float(np.float32(0.029167158))
DRAWS = 40


def gauss_denoiser(x, sigma, mu, s):
    return (s * s * x + sigma * sigma * mu) / (s * s + sigma * sigma)


class Model:
    """The guided model: returns (denoised, uncond_denoised); counts calls."""

    def __init__(self, mask=None, latent=None, inpaint_noise=None):
        self.calls = 0
        self.mask, self.latent, self.inpaint_noise = mask, latent, inpaint_noise

    def __call__(self, x, sigma):
        self.calls += 1
        if self.mask is not None:  # KSamplerX0Inpaint: the input is masked, the output blended
            x = x * self.mask + (self.inpaint_noise * sigma + self.latent) * (1.0 - self.mask)
        c = gauss_denoiser(x, sigma, MU_C, S_C)
        u = gauss_denoiser(x, sigma, MU_U, S_U)
        den = u + (c - u) * CFG
        if self.mask is not None:
            den = den * self.mask + self.latent * (1.0 - self.mask)
        return den, u  # the uncond is seen before the blend (post-CFG hook)


class Noise:
    def __init__(self, draws):
        self.draws, self.calls = draws, 0

    def __call__(self, sigma, sigma_next):
        d = self.draws[self.calls]
        self.calls += 1
        return d


def ancestral_step(s_from, s_to, eta):
    if not eta:
        return s_to, 0.0
    up = min(s_to, eta * (s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2) ** 0.5)
    return (s_to ** 2 - up ** 2) ** 0.5, up


# ---- the samplers, after comfy/k_diffusion/sampling.py (eps models: alpha = sigma exp(-log sigma))

def euler_ancestral_cfg_pp(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        den, unc = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        alpha_s = sigmas[i] * math.exp(-math.log(sigmas[i]))
        alpha_t = sigmas[i + 1] * math.exp(-math.log(sigmas[i + 1]))
        d = (x - alpha_s * unc) / sigmas[i]
        down, up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * den + alpha_t * down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def euler_cfg_pp(model, x, sigmas, noise):
    return euler_ancestral_cfg_pp(model, x, sigmas, noise, eta=0.0, s_noise=0.0)


def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        den, unc = model(x, sigmas[i])
        guidance = den - unc
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if down == 0:
            x = x + (x - unc) / sigmas[i] * (down - sigmas[i])
        else:
            t, t_next = -math.log(sigmas[i]), -math.log(down)
            h = t_next - t
            s = t + 0.5 * h
            x2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h * 0.5) * unc
            _, unc2 = model(x2, math.exp(-s))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * unc2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
        x = x + guidance
    return x


def dpmpp_2m_cfg_pp(model, x, sigmas, noise):
    old_unc = None
    for i in range(len(sigmas) - 1):
        den, unc = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den  # exp(-h) = 0
        else:
            t, t_next = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = t_next - t
            if old_unc is None:
                mix = -math.exp(-h) * unc
            else:
                r = (t + math.log(sigmas[i - 1])) / h
                mix = -math.exp(-h) * unc - math.expm1(-h) * (1 / (2 * r)) * (den - old_unc)
            x = den + mix + math.exp(-h) * x
        old_unc = unc
    return x


def res_multistep(model, x, sigmas, noise, eta=0.0, cfg_pp=False, s_noise=1.0):
    old_down, old = None, None
    for i in range(len(sigmas) - 1):
        den, unc = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if down == 0 or old is None:
            if cfg_pp:
                x = den + (x - unc) / sigmas[i] * down
            else:
                x = x + (x - den) / sigmas[i] * (down - sigmas[i])
        else:
            t, t_old, t_next = -math.log(sigmas[i]), -math.log(old_down), -math.log(down)
            t_prev = -math.log(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = math.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1, b2 = phi1 - phi2 / c2, phi2 / c2
            if cfg_pp:
                x = x + (den - unc)
                x = math.exp(-h) * x + h * (b1 * unc + b2 * old)
            else:
                x = math.exp(-h) * x + h * (b1 * den + b2 * old)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
        old = unc if cfg_pp else den
        old_down = down
    return x


def gradient_estimation(model, x, sigmas, noise, cfg_pp=False, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        den, unc = model(x, sigmas[i])
        d = (x - (unc if cfg_pp else den)) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = den
        else:
            x = den + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def ipndm(model, x, sigmas, noise, variable=False, max_order=4):
    buf = []
    t = sigmas
    for i in range(len(sigmas) - 1):
        tc, tn = t[i], t[i + 1]
        den, _ = model(x, tc)
        d = (x - den) / tc
        order = min(max_order, i + 1)
        if tn == 0:
            xn = den
        elif order == 1:
            xn = x + (tn - tc) * d
        elif not variable:
            if order == 2:
                xn = x + (tn - tc) * (3 * d - buf[-1]) / 2
            elif order == 3:
                xn = x + (tn - tc) * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
            else:
                xn = x + (tn - tc) * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24
        else:
            hn, h1 = tn - tc, tc - t[i - 1]
            if order == 2:
                c1, c2 = (2 + hn / h1) / 2, -(hn / h1) / 2
                xn = x + (tn - tc) * (c1 * d + c2 * buf[-1])
            elif order == 3:
                h2 = t[i - 1] - t[i - 2]
                tmp = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2
                c1 = (2 + hn / h1) / 2 + tmp
                c2 = -(hn / h1) / 2 - (1 + h1 / h2) * tmp
                c3 = tmp * h1 / h2
                xn = x + (tn - tc) * (c1 * d + c2 * buf[-1] + c3 * buf[-2])
            else:
                h2, h3 = t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
                t1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2
                t2 = ((1 - hn / (3 * (hn + h1))) / 2 + (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2))) \
                    * (hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
                q = h1 * (h1 + h2) / (h2 * (h2 + h3))
                c1 = (2 + hn / h1) / 2 + t1 + t2
                c2 = -(hn / h1) / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2
                c3 = t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2
                c4 = -t2 * q * h1 / h2
                xn = x + (tn - tc) * (c1 * d + c2 * buf[-1] + c3 * buf[-2] + c4 * buf[-3])
        buf = (buf + [d])[-(max_order - 1):]
        x = xn
    return x


def heunpp2(model, x, sigmas, noise):
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        d = (x - den) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x2 = x + d * dt
            den2, _ = model(x2, sigmas[i + 1])
            d2 = (x2 - den2) / sigmas[i + 1]
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d2 * w2) * dt
        else:
            x2 = x + d * dt
            den2, _ = model(x2, sigmas[i + 1])
            d2 = (x2 - den2) / sigmas[i + 1]
            x3 = x2 + d2 * (sigmas[i + 2] - sigmas[i + 1])
            den3, _ = model(x3, sigmas[i + 2])
            d3 = (x3 - den3) / sigmas[i + 2]
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            x = x + ((1 - w2 - w3) * d + w2 * d2 + w3 * d3) * dt
    return x


def exp_heun_2_x0(model, x, sigmas, noise):
    """sample_seeds_2 with eta 0, r 1, solver phi_2."""
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
        h = lt - ls
        s1 = math.exp(-lt)
        alpha_s1, alpha_t = s1 * math.exp(lt), sigmas[i + 1] * math.exp(lt)
        x2 = s1 / sigmas[i] * x - alpha_s1 * math.expm1(-h) * den
        den2, _ = model(x2, s1)
        b2 = (math.expm1(-h) + h) / -h
        b1 = math.expm1(-h) - b2
        x = sigmas[i + 1] / sigmas[i] * x - alpha_t * (b1 * den + b2 * den2)
    return x


def dpmpp_2m_sde_heun(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    old, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
        else:
            ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = lt - ls
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * math.exp(lt)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x + alpha_t * -math.expm1(-h_eta) * den
            if old is not None:
                r = h_last / h
                x = x + alpha_t * (-math.expm1(-h_eta) / -h_eta + 1) * (1 / r) * (den - old)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        old = den
        h_last = h
    return x


def dpmpp_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r=0.5):
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
        h = lt - ls
        ls1 = ls + r * h
        fac = 1 / (2 * r)
        s1 = math.exp(-ls1)
        alpha_s, alpha_s1, alpha_t = sigmas[i] * math.exp(ls), s1 * math.exp(ls1), sigmas[i + 1] * math.exp(lt)
        sd, su = ancestral_step(math.exp(-ls), math.exp(-ls1), eta)
        h_ = -math.log(sd) - ls
        x2 = (alpha_s1 / alpha_s) * math.exp(-h_) * x - alpha_s1 * math.expm1(-h_) * den
        if eta > 0 and s_noise > 0:
            x2 = x2 + alpha_s1 * noise(sigmas[i], s1) * s_noise * su
        den2, _ = model(x2, s1)
        sd, su = ancestral_step(math.exp(-ls), math.exp(-lt), eta)
        h_ = -math.log(sd) - ls
        dd = (1 - fac) * den + fac * den2
        x = (alpha_t / alpha_s) * math.exp(-h_) * x - alpha_t * math.expm1(-h_) * dd
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def dpmpp_3m_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    d1, d2, h, h1, h2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
        else:
            ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = lt - ls
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * math.exp(lt)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x + alpha_t * -math.expm1(-h_eta) * den
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                d1_0, d1_1 = (den - d1) / r0, (d1 - d2) / r1
                dd1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                dd2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * dd1 - (alpha_t * phi_3) * dd2
            elif h1 is not None:
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + (alpha_t * phi_2) * ((den - d1) / (h1 / h))
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        d1, d2 = den, d1
        h1, h2 = h, h1
    return x


def dpmpp_2m_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    old, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
        else:
            ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = lt - ls
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * math.exp(lt)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x + alpha_t * -math.expm1(-h_eta) * den
            if old is not None:
                x = x + 0.5 * alpha_t * -math.expm1(-h_eta) * (1 / (h_last / h)) * (den - old)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        old = den
        h_last = h
    return x


# ---- dpm_fast, dpm_adaptive (k-diffusion's DPMSolver on eps = (x - D) / sigma, t = -log sigma),
# as comfy/samplers.py calls them: from sigmas[0] to the last nonzero sigma, eta 0.

class DPMSolver:
    def __init__(self, model):
        self.model = model

    def eps(self, cache, key, x, t):
        if key not in cache:
            sigma = math.exp(-t)
            cache[key] = (x - self.model(x, sigma)[0]) / sigma
        return cache[key]

    def step1(self, x, t, t_next, cache):
        h = t_next - t
        return x - math.exp(-t_next) * math.expm1(h) * self.eps(cache, 'eps', x, t)

    def step2(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps = self.eps(cache, 'eps', x, t)
        s1 = t + r1 * h
        u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, 'eps_r1', u1, s1)
        return (x - math.exp(-t_next) * math.expm1(h) * eps
                - math.exp(-t_next) / (2 * r1) * math.expm1(h) * (eps_r1 - eps))

    def step3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, 'eps', x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
        eps_r1 = self.eps(cache, 'eps_r1', u1, s1)
        u2 = (x - math.exp(-s2) * math.expm1(r2 * h) * eps
              - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, 'eps_r2', u2, s2)
        return (x - math.exp(-t_next) * math.expm1(h) * eps
                - math.exp(-t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps))


def last_sigma(sigmas):
    return sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]


def dpm_fast(model, x, sigmas, noise):
    nfe = len(sigmas) - 1
    t_start, t_end = -math.log(sigmas[0]), -math.log(last_sigma(sigmas))
    m = nfe // 3 + 1
    ts = np.linspace(t_start, t_end, m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = DPMSolver(model)
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        x = [None, solver.step1, solver.step2, solver.step3][order](x, t, t_next, cache)
    return x


def dpm_adaptive(model, x, sigmas, noise, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0,
                 dcoeff=0.0, accept_safety=0.81):
    t_start, t_end = -math.log(sigmas[0]), -math.log(last_sigma(sigmas))
    solver = DPMSolver(model)
    s, x_prev, h = t_start, x, abs(h_init)
    b1, b2, b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
    errs = []
    while s < t_end - 1e-5:
        cache = {}
        t = min(t_end, s + h)
        if order == 2:
            x_low = solver.step1(x, s, t, cache)
            x_high = solver.step2(x, s, t, cache)
        else:
            x_low = solver.step2(x, s, t, cache, r1=1 / 3)
            x_high = solver.step3(x, s, t, cache)
        delta = np.maximum(atol, rtol * np.maximum(np.abs(x_low), np.abs(x_prev)))
        error = np.linalg.norm((x_low - x_high) / delta) / math.sqrt(x.size)
        inv = 1 / (error + 1e-8)
        if not errs:
            errs = [inv, inv, inv]
        errs[0] = inv
        factor = 1 + math.atan(errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3 - 1)
        if factor >= accept_safety:
            errs[2], errs[1] = errs[1], errs[0]
            x_prev, x, s = x_low, x_high, t
        h *= factor
    return x


# ---- deis (tab mode, max order 3): DEIS coefficients on EDM's VP time, sigma_min 0.002, sigma_max 80.

def deis_t_steps(sigmas, eps_s=1e-3, smin=0.002, smax=80.0):
    beta_d = 2 * (math.log(smin ** 2 + 1) / eps_s - math.log(smax ** 2 + 1)) / (eps_s - 1)
    beta_min = math.log(smax ** 2 + 1) - 0.5 * beta_d
    ts = [(math.sqrt(beta_min ** 2 + 2 * beta_d * math.log(s ** 2 + 1)) - beta_min) / beta_d for s in sigmas]
    return ts, beta_min, beta_d + beta_min


def deis_coeffs(ts, beta_0, beta_1, i, order, n_points=10000):
    taus = np.linspace(ts[i], ts[i + 1], n_points)
    dtau = (ts[i + 1] - ts[i]) / n_points
    alpha = np.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
    d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
    integrand = -0.5 * d_log_alpha / np.sqrt(alpha * (1 - alpha))
    prev = [ts[i - k] for k in range(order)]
    out = []
    for j in range(order):
        poly = np.ones(n_points)
        for k in range(order):
            if k != j:
                poly = poly * (taus - prev[k]) / (prev[j] - prev[k])
        out.append(float(np.sum(integrand * poly) * dtau))
    return out


def deis(model, x, sigmas, noise, max_order=3):
    ts, beta_0, beta_1 = deis_t_steps(sigmas)
    buf = []
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        d = (x - den) / sigmas[i]
        order = min(max_order, i + 1)
        if sigmas[i + 1] <= 0:
            order = 1
        if order == 1:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            c = deis_coeffs(ts, beta_0, beta_1, i, order)
            x = x + c[0] * d + sum(c[k] * buf[-k] for k in range(1, order))
        buf = (buf + [d])[-(max_order - 1):]
    return x


# ---- er_sde, seeds_2 / exp_heun_2_x0_sde, seeds_3 (VP data prediction, lambda = -log sigma).

def er_sde(model, x, sigmas, noise, s_noise=1.0, max_stage=3):
    def scaler(v):
        return v * (np.exp(v ** 0.3) + 10.0)
    lams = [math.exp(math.log(s)) if s > 0 else 0.0 for s in sigmas]
    points = np.arange(200, dtype=np.float64)
    old, old_d = None, None
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = den
        else:
            ls, lt = lams[i], lams[i + 1]
            alpha_s, alpha_t = sigmas[i] / ls, sigmas[i + 1] / lt
            r = scaler(lt) / scaler(ls)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * den
            if stage >= 2:
                dt = lt - ls
                step = -dt / 200.0
                pos = lt + points * step
                scaled = scaler(pos)
                s = np.sum(1 / scaled) * step
                den_d = (den - old) / (ls - lams[i - 1])
                x = x + alpha_t * (dt + s * scaler(lt)) * den_d
                if stage >= 3:
                    s_u = np.sum((pos - ls) / scaled) * step
                    den_u = (den_d - old_d) / ((ls - lams[i - 2]) / 2)
                    x = x + alpha_t * (dt ** 2 / 2 + s_u * scaler(lt)) * den_u
                old_d = den_d
            if s_noise > 0:
                v = lt ** 2 - ls ** 2 * r ** 2
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * (math.sqrt(v) if v >= 0 else 0.0)
        old = den
    return x


def seeds_2(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r=0.5, phi_2=False):
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
        h = lt - ls
        h_eta = h * (eta + 1)
        ls1 = ls + r * (lt - ls)
        s1 = math.exp(-ls1)
        alpha_s1, alpha_t = s1 * math.exp(ls1), sigmas[i + 1] * math.exp(lt)
        x2 = s1 / sigmas[i] * math.exp(-r * h * eta) * x - alpha_s1 * math.expm1(-r * h_eta) * den
        if inject:
            sde = math.sqrt(-math.expm1(-2 * r * h * eta)) * noise(sigmas[i], s1)
            x2 = x2 + sde * s1 * s_noise
        den2, _ = model(x2, s1)
        if phi_2:
            b2 = (math.expm1(-h_eta) + h_eta) / -h_eta / r
            b1 = math.expm1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x - alpha_t * (b1 * den + b2 * den2)
        else:
            fac = 1 / (2 * r)
            den_d = den + fac * (den2 - den)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x - alpha_t * math.expm1(-h_eta) * den_d
        if inject:
            seg = (r - 1) * h * eta
            sde = sde * math.exp(seg) + math.sqrt(-math.expm1(2 * seg)) * noise(s1, sigmas[i + 1])
            x = x + sde * sigmas[i + 1] * s_noise
    return x


def seeds_3(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r_1=1 / 3, r_2=2 / 3):
    inject = eta > 0 and s_noise > 0

    def phi_2(v):
        return (math.expm1(v) - v) / v
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        ls, lt = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
        h = lt - ls
        h_eta = h * (eta + 1)
        ls1, ls2 = ls + r_1 * (lt - ls), ls + r_2 * (lt - ls)
        s1, s2 = math.exp(-ls1), math.exp(-ls2)
        alpha_s1, alpha_s2, alpha_t = s1 * math.exp(ls1), s2 * math.exp(ls2), sigmas[i + 1] * math.exp(lt)
        x2 = s1 / sigmas[i] * math.exp(-r_1 * h * eta) * x - alpha_s1 * math.expm1(-r_1 * h_eta) * den
        if inject:
            sde = math.sqrt(-math.expm1(-2 * r_1 * h * eta)) * noise(sigmas[i], s1)
            x2 = x2 + sde * s1 * s_noise
        den2, _ = model(x2, s1)
        a3_2 = r_2 / r_1 * phi_2(-r_2 * h_eta)
        a3_1 = math.expm1(-r_2 * h_eta) - a3_2
        x3 = s2 / sigmas[i] * math.exp(-r_2 * h * eta) * x - alpha_s2 * (a3_1 * den + a3_2 * den2)
        if inject:
            seg = (r_1 - r_2) * h * eta
            sde = sde * math.exp(seg) + math.sqrt(-math.expm1(2 * seg)) * noise(s1, s2)
            x3 = x3 + sde * s2 * s_noise
        den3, _ = model(x3, s2)
        b3 = phi_2(-h_eta) / r_2
        b1 = math.expm1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * math.exp(-h * eta) * x - alpha_t * (b1 * den + b3 * den3)
        if inject:
            seg = (r_2 - 1) * h * eta
            sde = sde * math.exp(seg) + math.sqrt(-math.expm1(2 * seg)) * noise(s2, sigmas[i + 1])
            x = x + sde * sigmas[i + 1] * s_noise
    return x


# ---- sa_solver (predictor order 3, corrector order 4; tau = eta inside [SA_END, SA_START]).

SA_START, SA_END = 4.0, 0.4  # the interval the test passes as the model's percent_to_sigma(0.2), (0.8)


def sa_b_coeffs(sigma_next, lams, lambda_s, lambda_t, tau):
    n = len(lams)
    tau_mul = 1 + tau ** 2
    h = lambda_t - lambda_s
    p = np.arange(n, dtype=np.float64)
    terms = lambda_t ** p - lambda_s ** p * math.exp(-tau_mul * h)
    depth = p[:, None] - p[None, :]
    logf = np.array([math.lgamma(k + 1) for k in range(n)])
    coeff = logf[:, None] - logf[None, :]
    if tau > 0:
        coeff = coeff - depth * math.log(tau_mul)
    signs = np.where(depth % 2 == 0, 1.0, -1.0)
    mat = np.tril(np.exp(coeff) * signs)
    integrals = mat @ terms
    vander_t = np.vander(np.array(lams), n, increasing=True).T
    return sigma_next * math.exp(lambda_t) * np.linalg.solve(vander_t, integrals)


def sa_solver(model, x, sigmas, noise, eta=1.0, s_noise=1.0, predictor_order=3, corrector_order=4, pece=False):
    def tau_fn(sigma):
        return eta if eta > 0 and SA_START >= sigma >= SA_END else 0.0
    lams = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    max_order = max(predictor_order, corrector_order)
    x_pred, h, tau, nz = x, 0.0, 0.0, 0.0
    preds = []
    to_end = sigmas[-1] == 0
    for i in range(len(sigmas) - 1):
        den, _ = model(x_pred, sigmas[i])
        preds = (preds + [den])[-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not pece) else min(corrector_order, len(preds))
        if to_end:
            p_order = min(p_order, len(sigmas) - 2 - i)
            c_order = min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = sa_b_coeffs(sigmas[i], lams[i - c_order + 1:i + 1], lams[i - 1], lams[i], tau)
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau ** 2) * h) * x + sum(b[k] * preds[-c_order + k]
                                                                                for k in range(c_order))
            if tau > 0 and s_noise > 0:
                x = x + nz
            if pece:
                den, _ = model(x, sigmas[i])
                preds[-1] = den
        if sigmas[i + 1] == 0:
            x_pred = den
        else:
            tau = tau_fn(sigmas[i + 1])
            b = sa_b_coeffs(sigmas[i + 1], lams[i - p_order + 1:i + 1], lams[i], lams[i + 1], tau)
            h = lams[i + 1] - lams[i]
            x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau ** 2) * h) * x + sum(b[k] * preds[-p_order + k]
                                                                                     for k in range(p_order))
            if tau > 0 and s_noise > 0:
                nz = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * tau ** 2 * h)) * s_noise
                x_pred = x_pred + nz
    return x_pred


SAMPLERS = {
    "euler_cfg_pp": euler_cfg_pp,
    "euler_ancestral_cfg_pp": euler_ancestral_cfg_pp,
    "heunpp2": heunpp2,
    "exp_heun_2_x0": exp_heun_2_x0,
    "dpmpp_2s_ancestral_cfg_pp": dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde_gpu": dpmpp_sde,
    "dpmpp_2m_cfg_pp": dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde_gpu": dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": dpmpp_2m_sde_heun,
    "dpmpp_3m_sde_gpu": dpmpp_3m_sde,
    "ipndm": ipndm,
    "ipndm_v": lambda m, x, s, n: ipndm(m, x, s, n, variable=True),
    "res_multistep": res_multistep,
    "res_multistep_cfg_pp": lambda m, x, s, n: res_multistep(m, x, s, n, cfg_pp=True),
    "res_multistep_ancestral": lambda m, x, s, n: res_multistep(m, x, s, n, eta=1.0),
    "res_multistep_ancestral_cfg_pp": lambda m, x, s, n: res_multistep(m, x, s, n, eta=1.0, cfg_pp=True),
    "gradient_estimation": gradient_estimation,
    "gradient_estimation_cfg_pp": lambda m, x, s, n: gradient_estimation(m, x, s, n, cfg_pp=True),
    "dpm_fast": dpm_fast,
    "dpm_adaptive": dpm_adaptive,
    "deis": deis,
    "er_sde": er_sde,
    "seeds_2": seeds_2,
    "exp_heun_2_x0_sde": lambda m, x, s, n: seeds_2(m, x, s, n, r=1.0, phi_2=True),
    "seeds_3": seeds_3,
    "sa_solver": sa_solver,
    "sa_solver_pece": lambda m, x, s, n: sa_solver(m, x, s, n, pece=True),
}


def rf_step(s, s_next, eta):
    """sigma_down, the renoise factor alpha_next / alpha_down and the renoise level of the RF samplers."""
    down = s_next * (1 + (s_next / s - 1) * eta)
    a_next, a_down = 1 - s_next, 1 - down
    return down, a_next / a_down, (s_next ** 2 - down ** 2 * a_next ** 2 / a_down ** 2) ** 0.5


def euler_ancestral_rf(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """sample_euler_ancestral_RF: what euler_ancestral runs on CONST (flow) models."""
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        down, rescale, renoise = rf_step(sigmas[i], sigmas[i + 1], eta)
        r = down / sigmas[i]
        x = r * x + (1 - r) * den
        if eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def dpmpp_2s_ancestral_rf(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """sample_dpmpp_2s_ancestral_RF: the midpoint in lambda = log((1 - sigma) / sigma)."""
    for i in range(len(sigmas) - 1):
        den, _ = model(x, sigmas[i])
        down, rescale, renoise = rf_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = x + (x - den) / sigmas[i] * (down - sigmas[i])
            continue
        if sigmas[i] == 1.0:
            mid = 0.9999
        else:
            lam, lam_down = math.log((1 - sigmas[i]) / sigmas[i]), math.log((1 - down) / down)
            mid = 1 / (math.exp(lam + 0.5 * (lam_down - lam)) + 1)
        r = mid / sigmas[i]
        den2, _ = model(r * x + (1 - r) * den, mid)
        r = down / sigmas[i]
        x = r * x + (1 - r) * den2
        if eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


# Flow runs (latent kind "flow_zero" / "flow_image"): ComfyUI dispatches these two names to their
# RF forms when the model sampling is CONST.
FLOW_SAMPLERS = {"euler_ancestral": euler_ancestral_rf, "dpmpp_2s_ancestral": dpmpp_2s_ancestral_rf}


def flow_sigmas(n, shift=3.0):
    """A FLUX-like schedule: shifted t in (0, 1], starting at exactly 1, then 0."""
    t = np.linspace(1.0, 0.0, n + 1)[:-1]
    return list(f32(np.append(shift * t / (1 + (shift - 1) * t), 0.0)))


def f32(v):
    return np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)


def karras(n, smin, smax, rho=7.0):
    ramp = np.linspace(0, 1, n)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    s[0] = smax
    return list(f32(np.append(s, 0.0)))


def main():
    rng = np.random.default_rng(20240711)
    init = f32(rng.standard_normal(N))
    draws = [f32(rng.standard_normal(N)) for _ in range(DRAWS)]
    image = ((IDX % 7) - 3) / 4.0
    mask = ((IDX % 6) < 3).astype(np.float64)
    lines = ["# whole sampler runs in float64 (tests/reference/make_sampler_ext_goldens.py): 24 values,",
             "# exact Gaussian denoisers D(x, s) = (S^2 x + s^2 MU) / (S^2 + s^2) for cond (MU = ((i %% 5) - 2) * 0.3,"
             " S = %g) and uncond (MU = ((i %% 3) - 1) * 0.2, S = %g), guided D_u + (D_c - D_u) * %g;" % (S_C, S_U, CFG),
             "# 'image' latent ((i % 7) - 3) / 4, mask 1 where (i % 6) < 3; sigma_max " + repr(SIGMA_MAX),
             "# noise <initial noise>; draw <values> (successive noise draws); run <sampler>"
             " <latent zero|image|flow_zero|flow_image (flow: a CONST model, the RF sampler forms)>"
             " <mask 0|1> <model calls> <noise draws> <n sigmas> <sigmas>; out <values>;",
             "# sa_interval <start> <end>: sa_solver's stochastic interval (percent_to_sigma(0.2), (0.8) of a model)",
             "sa_interval %r %r" % (SA_START, SA_END),
             "noise " + " ".join("%.9g" % v for v in init)]
    lines += ["draw " + " ".join("%.9g" % v for v in d) for d in draws]
    six = karras(6, SIGMA_MIN, SIGMA_MAX)
    eight = karras(8, SIGMA_MIN, SIGMA_MAX)
    partial = six[2:]  # an img2img-like start below sigma_max
    runs = [(name, "zero", False, six) for name in SAMPLERS]
    runs += [("ipndm", "zero", False, eight), ("ipndm_v", "zero", False, eight), ("heunpp2", "zero", False, eight),
             ("res_multistep_ancestral", "image", False, partial), ("euler_cfg_pp", "image", False, partial),
             ("res_multistep_cfg_pp", "image", True, six), ("dpmpp_2s_ancestral_cfg_pp", "image", True, six),
             ("deis", "zero", False, eight), ("er_sde", "zero", False, eight), ("sa_solver", "zero", False, eight),
             ("sa_solver_pece", "image", True, eight), ("seeds_3", "image", False, partial),
             ("dpm_fast", "zero", False, eight), ("dpm_adaptive", "image", False, partial)]
    flow = flow_sigmas(6)
    runs += [(name, kind, False, sig) for name in FLOW_SAMPLERS
             for kind, sig in (("flow_zero", flow), ("flow_image", flow[2:]))]
    for name, latent_kind, use_mask, sig in runs:
        latent = np.zeros(N) if latent_kind.endswith("zero") else image
        s0 = sig[0]
        model = Model(mask, latent, init) if use_mask else Model()
        noise = Noise(draws)
        if latent_kind.startswith("flow"):  # CONST: noise_scaling, then inverse_noise_scaling
            out = FLOW_SAMPLERS[name](model, init * s0 + (1.0 - s0) * latent, sig, noise) / (1.0 - sig[-1])
        else:
            max_denoise = math.isclose(SIGMA_MAX, s0, rel_tol=1e-05) or s0 > SIGMA_MAX
            x = init * (math.sqrt(1.0 + s0 * s0) if max_denoise else s0) + latent
            out = SAMPLERS[name](model, x, sig, noise)
        lines.append("run %s %s %d %d %d %d %s" % (name, latent_kind, int(use_mask), model.calls, noise.calls, len(sig),
                                                   " ".join("%.9g" % v for v in sig)))
        lines.append("out " + " ".join("%.10g" % v for v in out))
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
