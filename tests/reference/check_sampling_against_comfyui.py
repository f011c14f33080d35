#!/usr/bin/env python3
"""Cross-checks tests/data/goldens/sigmas.txt and samplers.txt against ComfyUI's own code.

The goldens come from k-diffusion (PyPI) and from transcriptions of ComfyUI in
make_sampling_goldens.py (schedulers, KSampler's sigma handling, ddpm, lcm, lms's last step,
uni_pc). This developer check runs the code of a ComfyUI checkout instead on the same inputs:
comfy/k_diffusion/sampling.py and comfy/extra_samplers/uni_pc.py loaded with stand-ins for the
ComfyUI modules they import, and the scheduler functions, KSampler class, ModelSamplingDiscrete
and make_beta_schedule picked out of comfy/samplers.py, comfy/model_sampling.py and
comfy/ldm/modules/diffusionmodules/util.py by name. Nothing from ComfyUI is copied into this
repository. Exit status 0 when every schedule is identical and every run agrees to 1e-9.

    /opt/refenv/bin/python tests/reference/check_sampling_against_comfyui.py /path/to/ComfyUI
"""
import importlib.util
import inspect
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sampling_goldens as gold  # noqa: E402


class EPS:
    """Stand-in for comfy.model_sampling.EPS: only noise_scaling is used (by lcm)."""

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return noise * sigma + latent_image


class CONST:
    pass


def load(path, name, package=None):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    if package:
        mod.__package__ = package
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def comfy_modules(root):
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    ms = types.ModuleType("comfy.model_sampling")
    ms.EPS, ms.CONST = EPS, CONST
    patcher = types.ModuleType("comfy.model_patcher")
    utils = types.ModuleType("comfy.utils")
    from tqdm.auto import trange
    utils.model_trange = trange
    mm = types.ModuleType("comfy.memory_management")
    kd = types.ModuleType("comfy.k_diffusion")
    kd.__path__ = []
    kd_utils = types.ModuleType("comfy.k_diffusion.utils")
    kd_utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    comfy.model_sampling, comfy.model_patcher, comfy.utils, comfy.memory_management = ms, patcher, utils, mm
    kd.utils = kd_utils
    for name in ("deis", "sa_solver"):
        stub = types.ModuleType("comfy.k_diffusion." + name)
        setattr(kd, name, stub)
        sys.modules[stub.__name__] = stub
    sys.modules.update({"comfy": comfy, "comfy.model_sampling": ms, "comfy.model_patcher": patcher,
                        "comfy.utils": utils, "comfy.memory_management": mm, "comfy.k_diffusion": kd,
                        "comfy.k_diffusion.utils": kd_utils})
    sampling = load(os.path.join(root, "comfy", "k_diffusion", "sampling.py"), "comfy.k_diffusion.sampling",
                    "comfy.k_diffusion")
    unipc = load(os.path.join(root, "comfy", "extra_samplers", "uni_pc.py"), "comfy_uni_pc")
    return sampling, unipc


def pick(path, names, namespace):
    """Executes the top-level definitions called `names` from a Python file in namespace."""
    import ast
    with open(path) as f:
        tree = ast.parse(f.read())
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets):
            keep.append(node)
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), namespace)
    missing = [n for n in names if n not in namespace]
    if missing:
        sys.exit("not found in %s: %s" % (path, ", ".join(missing)))


def comfy_schedules(root, k_sampling):
    import functools
    import math
    import typing
    import numpy
    import scipy.stats
    ns = {"torch": torch, "math": math, "numpy": numpy, "np": numpy, "scipy": scipy, "partial": functools.partial,
          "NamedTuple": typing.NamedTuple, "Callable": typing.Callable, "logging": __import__("logging"),
          "k_diffusion_sampling": k_sampling, "SAMPLER_NAMES": ["euler", "dpm_2", "uni_pc", "dpmpp_2m"],
          "sampler_object": lambda name: None,
          "sample": lambda model, noise, positive, negative, cfg, device, sampler, sigmas, *a, **k: sigmas}
    ldm = os.path.join(root, "comfy", "ldm", "modules", "diffusionmodules", "util.py")
    pick(ldm, ["make_beta_schedule"], ns)
    pick(os.path.join(root, "comfy", "model_sampling.py"),
         ["rescale_zero_terminal_snr_sigmas", "ModelSamplingDiscrete"], ns)
    pick(os.path.join(root, "comfy", "samplers.py"),
         ["simple_scheduler", "ddim_scheduler", "normal_scheduler", "beta_scheduler", "linear_quadratic_schedule",
          "kl_optimal_scheduler", "SchedulerHandler", "SCHEDULER_HANDLERS", "SCHEDULER_NAMES", "calculate_sigmas",
          "KSampler"], ns)
    return ns


def check_sigmas(ns):
    ms = ns["ModelSamplingDiscrete"]()
    model = types.SimpleNamespace(get_model_object=lambda name: ms)
    bad = 0
    lines = 0
    f32 = lambda vals: [float(torch.tensor(float(v), dtype=torch.float32)) for v in vals]
    with open(os.path.join(gold.OUT, "sigmas.txt")) as f:
        for line in f:
            w = line.split()
            if not w or w[0].startswith("#"):
                continue
            if w[0] == "model":
                got = [(int(t.split(":")[0]), f32([t.split(":")[1]])[0]) for t in w[1:]]
                ok = all(float(ms.sigmas[i]) == v for i, v in got)
            elif w[0] == "sched":
                if w[1] == "kl_optimal" and int(w[2]) == 1:
                    continue
                want = f32(w[4:])
                got = ns["calculate_sigmas"](ms, w[1], int(w[2])).tolist()
                ok = got == want
            elif w[0] == "ksampler":
                want = f32(w[6:])
                ks = ns["KSampler"](model, int(w[3]), "cpu", sampler=w[2], scheduler=w[1], denoise=float(w[4]))
                ok = ks.sigmas.tolist() == want
            elif w[0] == "range":
                start, last, force = int(w[3]), int(w[4]), int(w[5])
                want = f32(w[7:])
                ks = ns["KSampler"](model, int(w[2]), "cpu", sampler="euler", scheduler=w[1], denoise=1.0)
                out = ks.sample(torch.zeros(1), None, None, 1.0, latent_image="unchanged",
                                start_step=None if start < 0 else start, last_step=None if last < 0 else last,
                                force_full_denoise=bool(force))
                ok = (out == "unchanged" and not want) or (not isinstance(out, str) and out.tolist() == want)
            else:
                continue
            lines += 1
            if not ok:
                bad += 1
                print("differs from ComfyUI: " + " ".join(w[:6]))
    print("sigmas: %d golden lines, %d differ from ComfyUI's code" % (lines, bad))
    return bad == 0


class Model:
    """What ComfyUI's samplers are handed: callable, with the model_sampling lookups they make."""

    def __init__(self, fn):
        self.fn = fn
        ms = EPS()
        self.inner_model = types.SimpleNamespace(
            inner_model=types.SimpleNamespace(model_sampling=ms),
            model_patcher=types.SimpleNamespace(get_model_object=lambda name: ms))

    def __call__(self, x, sigma, **kwargs):
        return self.fn(x, sigma)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    S, U = comfy_modules(sys.argv[1])
    sigmas_ok = check_sigmas(comfy_schedules(sys.argv[1], S))
    s = gold.ModelSamplingDiscrete()
    noise = torch.randn(gold.SHAPE, generator=torch.manual_seed(gold.NOISE_SEED)).double()
    image = (torch.arange(24, dtype=torch.float64).reshape(gold.SHAPE) % 7 - 3) / 4.0
    mask = ((torch.arange(24).reshape(gold.SHAPE) % 6) < 3).double()
    with open(os.path.join(gold.OUT, "samplers.txt")) as f:
        golden = [line.split() for line in f if line.startswith("out ")]
    worst = 0.0
    for k, (sampler, sched, steps, denoise, latent_kind, use_mask) in enumerate(gold.SAMPLER_RUNS):
        sig = gold.ksampler_sigmas(s, sched, sampler, steps, denoise).double()
        latent = torch.zeros(gold.SHAPE, dtype=torch.float64) if latent_kind == "zero" else image
        s0 = float(sig[0])
        smax = float(s.sigma_max)
        max_denoise = abs(smax - s0) <= 1e-5 * max(smax, s0) or s0 > smax
        x = noise * ((1.0 + s0 * s0) ** 0.5 if max_denoise else s0) + latent
        fn = gold.denoiser
        if use_mask:
            inpaint_noise = noise
            if sampler == "ddim":
                inpaint_noise = torch.randn(gold.SHAPE, generator=torch.manual_seed(gold.NOISE_SEED + 1)).double()
            fn = gold.inpaint_wrap(gold.denoiser, latent, inpaint_noise, mask)
        model = Model(fn)
        ns = gold.SeededNoise(gold.NOISE_SEED)
        if sampler in ("uni_pc", "uni_pc_bh2"):
            torch.set_default_dtype(torch.float64)  # uni_pc makes some constants in the default dtype
            out = U.sample_unipc(model, x, sig.clone(), extra_args={}, disable=True,
                                 variant="bh1" if sampler == "uni_pc" else "bh2")
            torch.set_default_dtype(torch.float32)
        else:
            name = "euler" if sampler == "ddim" else sampler
            fn_ = getattr(S, "sample_" + name)
            kwargs = {"noise_sampler": ns} if "noise_sampler" in inspect.signature(fn_).parameters else {}
            out = fn_(model, x, sig, extra_args={}, disable=True, **kwargs)
        want = torch.tensor([float(v) for v in golden[k][1:]], dtype=torch.float64)
        diff = float((out.flatten() - want).abs().max())
        worst = max(worst, diff)
        print("%-20s %-13s steps %d denoise %-4s %-5s mask %d: max |ComfyUI - golden| = %.3g"
              % (sampler, sched, steps, denoise, latent_kind, use_mask, diff))
    print("worst %.3g" % worst)
    sys.exit(0 if worst < 1e-9 and sigmas_ok else 1)


if __name__ == "__main__":
    main()
