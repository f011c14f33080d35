#!/usr/bin/env python3
"""Writes the ModelSamplingContinuousEDM goldens (tests/data/goldens/).

* edm_sigmas.txt: ComfyUI's ModelSamplingContinuousEDM (comfy/model_sampling.py), re-stated here in
  torch in ComfyUI's float32 ops: for each sampling choice and sigma range, a sample of the
  1000-entry sigma table, the nine schedulers over it (the schedulers of make_sampling_goldens.py),
  timestep(sigma) = 0.25 ln sigma, sigma(timestep), percent_to_sigma, and the preconditioning:
  calculate_denoised's coefficients on x and the output (EPS, V_PREDICTION, EDM with their
  sigma_data) and calculate_input's scale. Lines:
      ms <sampling> <sigma_min> <sigma_max>
      model <index>:<sigma> ...
      sched <scheduler> <steps> <count> <values>
      timestep <sigma> <value> | sigma <timestep> <value> | percent <p> <value>
      denoise <sigma> <c_x> <c_out> <input scale>
* sd2_sample_{edm,cv}_final.bin: whole 5-step Euler runs (cfg 6, seed 99, 64x64, the prompts of
  make_sd2_goldens.py) with the diffusers UNet: the eps file as edm (sigma 0.002..120, karras) and
  the v file as continuous v_prediction (sigma 0.03..14.6, normal).

Run: python3 tests/reference/make_edm_goldens.py [build/sdflow_mkckpt]"""
import math
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sampling_goldens as msg  # noqa: E402
from make_sd2_goldens import (EPS_FILE, SAMPLE_CFG, SAMPLE_SEED, SAMPLE_SIZE, SAMPLE_STEPS, V_FILE,  # noqa: E402
                              encode_h, make_clip_h, make_unet, write_checkpoint)
from make_sdxl_goldens import windows  # noqa: E402
from make_unet_goldens import write  # noqa: E402


class ContinuousEDM(msg.ModelSamplingDiscrete):
    """ModelSamplingContinuousEDM with the type's calculate_input / calculate_denoised (sigma_min
    and sigma_max: the table's ends, as the discrete class)."""

    def __init__(self, kind, sigma_min, sigma_max):  # pylint: disable=super-init-not-called
        self.kind = kind
        self.sigma_data = 0.5 if kind == "edm" else 1.0
        self.sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma):
        return 0.25 * sigma.log()

    def sigma(self, timestep):
        return (timestep / 0.25).exp()

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        percent = 1.0 - percent
        lo = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - lo) * percent + lo)

    def calculate_input(self, sigma, x):
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, out, x):
        sd = self.sigma_data
        if self.kind == "eps":
            return x - out * sigma
        c = out * sigma * sd / (sigma ** 2 + sd ** 2) ** 0.5
        base = x * sd ** 2 / (sigma ** 2 + sd ** 2)
        return base + c if self.kind == "edm" else base - c


CASES = [("edm", 0.002, 120.0), ("v_prediction", 0.03, 14.6), ("eps", 0.002, 80.0)]


def f(v):
    return "%.9g" % float(v)


def write_sigmas():
    lines = [line for line in __doc__.split("Lines:")[1].split("*")[0].strip().splitlines()]
    lines = ["# ModelSamplingContinuousEDM (ComfyUI), float32; formats:"] + ["# " + x.strip() for x in lines]
    for kind, lo, hi in CASES:
        s = ContinuousEDM(kind, lo, hi)
        lines.append("ms %s %r %r" % (kind, lo, hi))
        lines.append("model " + " ".join("%d:%s" % (i, f(s.sigmas[i])) for i in [0, 1, 137, 500, 998, 999]))
        for name in msg.SCHEDULERS:
            for steps in [1, 3, 10]:
                if name == "kl_optimal" and steps == 1:
                    continue
                sig = msg.calculate_sigmas(s, name, steps)
                lines.append("sched %s %d %d %s" % (name, steps, len(sig), msg.fmt(sig)))
        for sg in [0.01, 1.0, 7.5, 100.0]:
            lines.append("timestep %r %s" % (sg, f(s.timestep(torch.tensor(sg)))))
        for t in [-1.2, 0.0, 0.3, 1.1]:
            lines.append("sigma %r %s" % (t, f(s.sigma(torch.tensor(t)))))
        for p in [0.0, 0.25, 0.5, 0.999, 1.0]:
            lines.append("percent %r %s" % (p, repr(s.percent_to_sigma(p))))
        for sg in [0.05, 1.0, 14.0]:
            t = torch.tensor(sg)
            one, zero = torch.tensor(1.0), torch.tensor(0.0)
            cx, cout = s.calculate_denoised(t, zero, one), s.calculate_denoised(t, one, zero)
            lines.append("denoise %r %s %s %s" % (sg, f(cx), f(cout), f(1.0 / s.calculate_input(t, one))))
    with open(os.path.join(msg.OUT, "edm_sigmas.txt"), "w") as out:
        out.write("\n".join(lines) + "\n")


def sample(unet, context, s, sigmas, noise):
    """KSampler euler, cfg 6, full denoise: x = noise * sqrt(1 + sigma_0^2) (max_denoise)."""
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    for i in range(SAMPLE_STEPS):
        sg = torch.tensor([sigmas[i]])
        xin = s.calculate_input(sg, x)
        t = s.timestep(sg).float()
        with torch.no_grad():
            out = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=context).sample
        den = s.calculate_denoised(sg, out, torch.cat([x, x]))
        denoised = den[1:] + (den[:1] - den[1:]) * SAMPLE_CFG
        x = x + (x - denoised) / sg * (sigmas[i + 1] - sigmas[i])
    return x


def write_runs(tool):
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        eps_ckpt = write_checkpoint(tool, tmp, EPS_FILE)
        v_ckpt = write_checkpoint(tool, tmp, V_FILE)
    noise = torch.randn([1, 4, SAMPLE_SIZE // 8, SAMPLE_SIZE // 8], generator=torch.manual_seed(SAMPLE_SEED))
    edm = ContinuousEDM("edm", 0.002, 120.0)
    sig = [float(v) for v in msg.calculate_sigmas(edm, "karras", SAMPLE_STEPS)]
    cond = encode_h(make_clip_h(eps_ckpt), windows(0))
    write("sd2_sample_edm_final.bin", (sample(make_unet(eps_ckpt), cond, edm, sig, noise) / 0.18215).numpy())
    cv = ContinuousEDM("v_prediction", 0.03, 14.6)
    sig = [float(v) for v in msg.calculate_sigmas(cv, "normal", SAMPLE_STEPS)]
    v_cond = encode_h(make_clip_h(v_ckpt), windows(0))
    write("sd2_sample_cv_final.bin", (sample(make_unet(v_ckpt), v_cond, cv, sig, noise) / 0.18215).numpy())


def main():
    write_sigmas()
    write_runs(sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt")


if __name__ == "__main__":
    sys.exit(main())
