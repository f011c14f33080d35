#!/usr/bin/python3
"""Writes tests/data/goldens/samplers_ext.txt: whole runs of the samplers sdflow added after the
first sixteen (CFG++ variants, res_multistep, gradient_estimation, ipndm, heunpp2,
exp_heun_2_x0, dpmpp_2m_sde_heun and the _gpu names), each re-implemented here in float64 numpy
after ComfyUI's comfy/k_diffusion/sampling.py (read, not copied), on an analytic model.

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
}


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
             "# noise <initial noise>; draw <values> (successive noise draws); run <sampler> <latent zero|image>"
             " <mask 0|1> <model calls> <noise draws> <n sigmas> <sigmas>; out <values>",
             "noise " + " ".join("%.9g" % v for v in init)]
    lines += ["draw " + " ".join("%.9g" % v for v in d) for d in draws]
    six = karras(6, SIGMA_MIN, SIGMA_MAX)
    eight = karras(8, SIGMA_MIN, SIGMA_MAX)
    partial = six[2:]  # an img2img-like start below sigma_max
    runs = [(name, "zero", False, six) for name in SAMPLERS]
    runs += [("ipndm", "zero", False, eight), ("ipndm_v", "zero", False, eight), ("heunpp2", "zero", False, eight),
             ("res_multistep_ancestral", "image", False, partial), ("euler_cfg_pp", "image", False, partial),
             ("res_multistep_cfg_pp", "image", True, six), ("dpmpp_2s_ancestral_cfg_pp", "image", True, six)]
    for name, latent_kind, use_mask, sig in runs:
        latent = np.zeros(N) if latent_kind == "zero" else image
        s0 = sig[0]
        max_denoise = math.isclose(SIGMA_MAX, s0, rel_tol=1e-05) or s0 > SIGMA_MAX
        x = init * (math.sqrt(1.0 + s0 * s0) if max_denoise else s0) + latent
        model = Model(mask, latent, init) if use_mask else Model()
        noise = Noise(draws)
        out = SAMPLERS[name](model, x, sig, noise)
        lines.append("run %s %s %d %d %d %d %s" % (name, latent_kind, int(use_mask), model.calls, noise.calls, len(sig),
                                                   " ".join("%.9g" % v for v in sig)))
        lines.append("out " + " ".join("%.10g" % v for v in out))
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
