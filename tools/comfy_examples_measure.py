#!/usr/bin/env python3
"""The measure of docs/comfyui.md "How well it works": imports, validates and runs every PNG
under PNG_DIR (a checkout of github.com/comfyanonymous/ComfyUI_examples) that carries a
ComfyUI "prompt" chunk, with tiny random-weight models made by this build's sdflow_mk* tools
under the names each workflow asks for, every size 1/8 and 2 sampling steps.

usage: python3 tools/comfy_examples_measure.py SDFLOW_SRC SDFLOW_BUILD PNG_DIR WORK_DIR
Writes WORK_DIR/results.tsv (png, stage that failed or "ok", the first error line) and prints
the counts. Needs Python with numpy and safetensors (FLUX all-in-one checkpoints); not used by
the tests."""
import json, os, re, shutil, subprocess, sys, collections, struct, zlib

SRC, BUILD, PNGS, WORK = sys.argv[1:5]
BIN = os.path.join(BUILD, "sdflow")
G = os.path.join(SRC, "tests/data/goldens")
MODELS = os.path.join(WORK, "models")
INPUT = os.path.join(WORK, "input")
made = {}

def sh(args, timeout=300):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return 124, "", "timed out after %ds" % timeout

def flux_all_in_one(preset, out):
    """A FLUX checkpoint in ComfyUI's all-in-one layout (flux1-dev-fp8): sdflow_mkckpt's preset
    with sdflow_mktextenc flux-te's text encoders added. None, or why it failed."""
    from safetensors.numpy import load_file, save_file
    parts = [out + ".model", out + ".te"]
    for args in ([os.path.join(BUILD, "sdflow_mkckpt"), "--preset", preset, parts[0]],
                 [os.path.join(BUILD, "sdflow_mktextenc"), "flux-te", parts[1]]):
        rc, _, err = sh(args)
        if rc:
            return "maker failed: " + err.strip()[:200]
    tensors = load_file(parts[0])
    tensors.update(load_file(parts[1]))
    save_file(tensors, out)
    for p in parts:
        os.remove(p)
    return None

def mk(folder, name, how):
    """Create models/FOLDER/NAME once; HOW is a list of argv, or ('copy', path)."""
    path = os.path.join(MODELS, folder, name)
    if path in made:
        return made[path]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if how is None:
        made[path] = "no random-weight maker for this family"
    elif how[0] == "flux-aio":
        made[path] = flux_all_in_one(how[1], path)
    elif how[0] == "copy":
        shutil.copy(how[1], path)
        made[path] = None
    else:
        rc, _, err = sh([a.replace("@OUT", path) for a in how])
        made[path] = None if rc == 0 else "maker failed: " + err.strip()[:200]
    return made[path]

MK = lambda *a: [os.path.join(BUILD, "sdflow_mkckpt"), *a, "@OUT"]
# SD1 checkpoints, ControlNets and LoRA bases. (The T2I-Adapter copied from the goldens fits no
# checkpoint sdflow_mkckpt writes: its widths are 8/16/32/32, below GroupNorm's 32 groups.)
SD1 = ("--preset", "tiny")
TE = lambda k: [os.path.join(BUILD, "sdflow_mktextenc"), k, "@OUT"]

def checkpoint_preset(n):
    l = n.lower()
    if "sd3" in l: return MK("--kind", "sd3-stub")
    if "unclip" in l: return MK("--preset", "sd2-unclip-tiny")
    if any(k in l for k in ("sd3", "aura_flow", "hunyuan", "lumina", "cascade", "zero123")):
        return None
    if "flux1-dev" in l: return ("flux-aio", "flux-dev-tiny")
    if "flux1-schnell" in l: return ("flux-aio", "flux-schnell-tiny")
    if "refiner" in l: return MK("--preset", "sdxl-refiner-tiny")
    if "cosxl_edit" in l: return MK("--preset", "sdxl-tiny", "--in-channels", "8")
    if "xl" in l: return MK("--preset", "sdxl-tiny")
    if "512-inpainting" in l: return MK("--preset", "sd2-tiny", "--in-channels", "9")
    if "inpainting" in l: return MK("--preset", "tiny", "--in-channels", "9")
    if "v2-1_768" in l or "wd-illusion" in l: return MK("--preset", "sd2-v-tiny")
    return MK(*SD1)

def model_for(cls, inp, name):
    """(folder, argv) for a model input, or None when the input names no model file."""
    l = name.lower()
    if cls in ("CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader",
               "ImageOnlyCheckpointLoader") and inp == "ckpt_name":
        return "checkpoints", checkpoint_preset(name)
    if cls in ("UNETLoader", "UnetLoaderGGUF") and inp == "unet_name":
        if l in ("flux1-dev.safetensors", "flux1-kontext-dev.safetensors"): return "unet", MK("--preset", "flux-dev-tiny")
        if l == "flux1-schnell.safetensors": return "unet", MK("--preset", "flux-schnell-tiny")
        return "unet", None
    if cls in ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "QuadrupleCLIPLoader") and inp.startswith("clip_name"):
        if l == "clip_l.safetensors": return "clip", TE("clip-l")
        if l == "clip_g.safetensors": return "clip", TE("clip-g")
        if l.startswith("t5xxl"): return "clip", TE("t5")
        return "clip", None
    if cls == "VAELoader" and inp == "vae_name":
        if l == "ae.safetensors": return "vae", MK("--preset", "flux-dev-tiny", "--kind", "vae")
        if l in ("kl-f8-anime2.ckpt", "vae-ft-mse-840000-ema-pruned.safetensors"): return "vae", MK("--preset", "tiny", "--kind", "vae")
        return "vae", None
    if cls in ("ControlNetLoader", "DiffControlNetLoader") and inp == "control_net_name":
        if l.startswith("t2iadapter"): return "controlnet", ("copy", os.path.join(G, "t2i_full.safetensors"))
        if any(k in l for k in ("sd3", "flux", "cascade")): return "controlnet", None
        return "controlnet", MK(*SD1, "--kind", "controlnet")
    if cls in ("LoraLoader", "LoraLoaderModelOnly") and inp == "lora_name":
        base = os.path.join(MODELS, "checkpoints", "_lora_base_%s.safetensors" % ("xl" if "xl" in l else "sd1"))
        if "flux" in l: return "loras", None
        mk("checkpoints", os.path.basename(base), MK("--preset", "sdxl-tiny") if "xl" in l else MK(*SD1))
        return "loras", [os.path.join(BUILD, "sdflow_mklora"), base, "@OUT"]
    if cls == "UpscaleModelLoader" and inp == "model_name":
        up = "1" if "x2" in l else "2"
        return "upscale_models", [os.path.join(BUILD, "sdflow_mkesrgan"), "--nf", "8", "--gc", "4", "--blocks", "1", "--up", up, "@OUT"]
    if cls == "CLIPVisionLoader" and inp == "clip_name":
        if l == "clip_vision_g.safetensors": return "clip_vision", ("copy", os.path.join(G, "clip_vision_proj160.safetensors"))
        return "clip_vision", None
    if inp.endswith("_name") and re.search(r"\.(safetensors|ckpt|pt|pth|bin|gguf)$", l):
        return cls, None
    return None

def png_input(name):
    os.makedirs(INPUT, exist_ok=True)
    src = "shapes-inpaint.png" if ("inpaint" in name or "outpaint" in name) else "shapes.png"
    dst = os.path.join(INPUT, name)
    if not os.path.exists(dst):
        shutil.copy(os.path.join(SRC, "examples/input", src), dst)

def prompt_chunk(path):
    d = open(path, "rb").read()
    i = 8
    while d[:8] == b"\x89PNG\r\n\x1a\n" and i + 8 <= len(d):
        n, t = struct.unpack(">I4s", d[i:i + 8]); body = d[i + 8:i + 8 + n]; i += 12 + n
        if t == b"tEXt" and body.startswith(b"prompt\0"):
            return json.loads(body[7:].decode("latin1"))
        if t == b"iTXt" and body.startswith(b"prompt\0"):
            rest = body[7:]; comp = rest[0]; rest = rest[2:]
            rest = rest.split(b"\0", 2)[2]
            return json.loads(zlib.decompress(rest) if comp else rest)
    return None

def first_error(err):
    lines = [l for l in err.splitlines() if l.strip() and not re.search(r"\d+ problems? in ", l)]
    lines = [l for l in lines if "error" in l or ": node '" in l] or lines
    return (lines[0] if lines else err.strip().splitlines()[-1] if err.strip() else "")[:300]

def run_sets(prompt, xml):
    """--set NODE.INPUT=VALUE making every literal size 1/8 (a multiple of 8, at least 8, so that
    areas and pastes keep their places), megapixels 1/64, and 2 sampling steps (KSamplerAdvanced:
    4, its start and end steps scaled alike)."""
    sets = []
    small = lambda v: max(8, int(round(v / 64.0)) * 8)
    kept = set(re.findall(r'<node id="([^"]+)"', open(xml).read()))
    for nid, node in prompt.items():
        if nid not in kept:
            continue  # an input no output depends on, dropped by the import
        ins = node.get("inputs", {})
        lit = {k: v for k, v in ins.items() if not isinstance(v, list)}
        for k, v in lit.items():
            if k in ("width", "height", "x", "y", "left", "top", "right", "bottom") and isinstance(v, int) and v >= 8:
                lo = 64 if node["class_type"] == "ConditioningSetArea" and k in ("width", "height") else 8
                sets.append("%s.%s=%d" % (nid, k, max(lo, small(v))))
            elif k == "megapixels" and isinstance(v, (int, float)):
                sets.append("%s.%s=%g" % (nid, k, v / 64.0))
        if isinstance(lit.get("steps"), int):
            n = 4 if node["class_type"] == "KSamplerAdvanced" else 2
            sets.append("%s.steps=%d" % (nid, n))
            for k in ("start_at_step", "end_at_step"):
                if isinstance(lit.get(k), int):
                    sets.append("%s.%s=%d" % (nid, k, min(10000, round(lit[k] * n / lit["steps"]))))
    return [a for s in sets for a in ("--set", s)]

def main():
    os.makedirs(WORK, exist_ok=True)
    rows = []
    pngs = sorted(os.path.relpath(os.path.join(d, f), PNGS) for d, _, fs in os.walk(PNGS)
                  for f in fs if f.lower().endswith(".png") and ".git" not in d)
    for rel in pngs:
        png, f = os.path.join(PNGS, rel), rel.replace(os.sep, "_")
        prompt = prompt_chunk(png)
        if prompt is None:
            continue
        xml = os.path.join(WORK, "xml", f[:-4] + ".xml")
        os.makedirs(os.path.dirname(xml), exist_ok=True)
        rc, _, err = sh([BIN, "import", "comfy", png, "-o", xml])
        if rc != 0:
            rows.append((f, "import", first_error(err))); continue
        missing = []
        for nid, node in prompt.items():
            for inp, v in node.get("inputs", {}).items():
                if not isinstance(v, str):
                    continue
                if node["class_type"] == "LoadImage" and inp == "image":
                    png_input(v)
                m = model_for(node["class_type"], inp, v)
                if m:
                    why = mk(m[0], v, m[1])
                    if why:
                        missing.append("%s %s: %s" % (node["class_type"], v, why))
        common = ["--models-dir", MODELS, "--input-dir", INPUT]
        rc, _, err = sh([BIN, "validate", *common, xml])
        if rc != 0:
            rows.append((f, "validate", (missing[0] + " | " if missing else "") + first_error(err))); continue
        out = os.path.join(WORK, "out", f[:-4])
        rc, _, err = sh([BIN, "run", *common, "--output-dir", out, "--no-cache", *run_sets(prompt, xml), xml], timeout=600)
        rows.append((f, "run" if rc != 0 else "ok", first_error(err) if rc != 0 else ""))
        print(rows[-1], flush=True)
    with open(os.path.join(WORK, "results.tsv"), "w") as o:
        for r in rows:
            o.write("\t".join(r) + "\n")
    c = collections.Counter(r[1] for r in rows)
    n = len(rows)
    print("workflows %d; import fails %d, validate fails %d, run fails %d, run ok %d" %
          (n, c["import"], c["validate"], c["run"], c["ok"]))

main()
