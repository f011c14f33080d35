#!/usr/bin/python3
"""Writes tests/data/goldens/sigmas_custom.txt: the schedules of ComfyUI's custom-sampling
scheduler nodes, computed here with numpy after comfy/k_diffusion/sampling.py (get_sigmas_karras,
get_sigmas_exponential, get_sigmas_polyexponential), comfy_extras/nodes_custom_sampler.py
(SDTurboScheduler) and comfy_extras/nodes_align_your_steps.py (loglinear_interp with numpy, as
ComfyUI itself does). Where ComfyUI computes in float32 torch tensors the same float32
operations are done here, with torch's CPU linspace formula.

Run from the repository root (developers only; CI never runs Python; needs numpy only):

    python3 tests/reference/make_custom_sigmas_goldens.py
"""
import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "goldens", "sigmas_custom.txt")
F = np.float32


def linspace_f32(start, end, n):
    """torch.linspace on the CPU for float32: from both ends towards the middle."""
    start, end = F(start), F(end)
    if n == 1:
        return np.array([start], dtype=F)
    step = F((end - start) / F(n - 1))
    out = np.empty(n, dtype=F)
    for i in range(n):
        out[i] = start + step * F(i) if i < n // 2 else end - step * F(n - 1 - i)
    return out


def karras(n, smin, smax, rho):
    ramp = linspace_f32(0, 1, n)
    min_inv, max_inv = smin ** (1 / rho), smax ** (1 / rho)
    s = (F(max_inv) + ramp * F(min_inv - max_inv)) ** F(rho)
    return np.append(s, F(0))


def exponential(n, smin, smax):
    return np.append(np.exp(linspace_f32(math.log(smax), math.log(smin), n)), F(0))


def polyexponential(n, smin, smax, rho):
    ramp = linspace_f32(1, 0, n) ** F(rho)
    return np.append(np.exp(ramp * F(math.log(smax) - math.log(smin)) + F(math.log(smin))), F(0))


def sd1_log_sigmas():
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    ac = np.cumprod(1.0 - betas)
    return np.log(((1 - ac) / ac) ** 0.5).astype(F)


def sd_turbo(log_sigmas, steps, denoise):
    start = 10 - int(10 * denoise)
    ts = (np.arange(1, 11) * 100 - 1)[::-1][start:start + steps]
    return np.append(np.exp(log_sigmas[ts]), F(0))  # ModelSamplingDiscrete.sigma at whole timesteps


NOISE_LEVELS = {"SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
                        0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
                "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
                         0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
                "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]}


def loglinear_interp(t_steps, num_steps):
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(t_steps[::-1])
    new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
    return np.exp(new_ys)[::-1].copy()


def ays(model_type, steps, denoise):
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return np.array([], dtype=F)
        total = round(steps * denoise)
    sigmas = NOISE_LEVELS[model_type][:]
    if steps + 1 != len(sigmas):
        sigmas = loglinear_interp(sigmas, steps + 1)
    sigmas = list(sigmas[-(total + 1):])
    sigmas[-1] = 0
    return np.array(sigmas, dtype=F)


def fmt(v):
    return "%d %s" % (len(v), " ".join("%.9g" % x for x in v))


def main():
    lines = ["# ComfyUI's custom-sampling schedules, float32 (tests/reference/make_custom_sigmas_goldens.py)",
             "# karras|polyexponential <steps> <sigma_max> <sigma_min> <rho> <count> <values>",
             "# exponential <steps> <sigma_max> <sigma_min> <count> <values>",
             "# sd_turbo <steps> <denoise> <count> <values>;  ays <model_type> <steps> <denoise> <count> <values>"]
    for steps in [1, 2, 5, 20, 37]:
        for smax, smin, rho in [(14.614642, 0.0291675, 7.0), (80.0, 0.002, 3.5), (1.0, 0.5, 1.0)]:
            lines.append("karras %d %r %r %r %s" % (steps, smax, smin, rho, fmt(karras(steps, smin, smax, rho))))
            lines.append("polyexponential %d %r %r %r %s" % (steps, smax, smin, rho,
                                                              fmt(polyexponential(steps, smin, smax, rho))))
            lines.append("exponential %d %r %r %s" % (steps, smax, smin, fmt(exponential(steps, smin, smax))))
    log_sigmas = sd1_log_sigmas()
    for steps in [1, 2, 4, 10]:
        for denoise in [1.0, 0.5, 0.35, 0.0]:
            lines.append("sd_turbo %d %r %s" % (steps, denoise, fmt(sd_turbo(log_sigmas, steps, denoise))))
    for model_type in NOISE_LEVELS:
        for steps in [1, 4, 10, 13, 25]:
            for denoise in [1.0, 0.6, 0.05]:
                lines.append("ays %s %d %r %s" % (model_type, steps, denoise, fmt(ays(model_type, steps, denoise))))
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
