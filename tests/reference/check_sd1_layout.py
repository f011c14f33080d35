#!/usr/bin/env python3
"""Checks sdflow's SD1 single-file layout (ml/families/sd1_layout.c) against diffusers/transformers.

For several architectures it lists the tensors sdflow_mkckpt would write (--list), converts
the names with diffusers' own LDM -> diffusers converters (the code diffusers uses to load
v1-5-pruned-emaonly.safetensors), and requires the result to match the state dict of
UNet2DConditionModel / AutoencoderKL / CLIPTextModel built at that size on the meta device:
same keys, same shapes, nothing left over. Developer tool; CI never runs it.

    /opt/refenv/bin/python tests/reference/check_sd1_layout.py build/sdflow_mkckpt

With "--file CKPT CASE" it also loads a checkpoint the tool wrote (e.g. sdflow_mkckpt --preset
tiny tiny.safetensors; CASE "tiny") with the safetensors library and loads the converted
weights into the diffusers/transformers models with strict=True.
"""
import subprocess
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel

CASES = {
    "sd15": dict(args=["--preset", "sd15"], mc=320, mult=[1, 2, 4, 4], attn=[1, 1, 1, 0], nrb=2, depth=1,
                 ctx=768, inc=4, clip=(768, 12, 3072), vae=(128, [1, 2, 4, 4], 2)),
    "tiny": dict(args=["--preset", "tiny"], mc=32, mult=[1, 2, 2], attn=[1, 1, 0], nrb=1, depth=1, ctx=64,
                 inc=4, clip=(64, 2, 256), vae=(32, [1, 2, 2, 2], 1)),
    "inpaint-deep": dict(args=["--preset", "tiny", "--in-channels", "9", "--depth", "2", "--res-blocks", "2",
                               "--channel-mult", "1,2", "--attention", "0,1", "--context", "128"],
                         mc=32, mult=[1, 2], attn=[0, 1], nrb=2, depth=2, ctx=128, inc=9, clip=(128, 2, 256),
                         vae=(32, [1, 2, 2, 2], 1)),
}


def listing(tool, args):
    out = subprocess.run([tool, "--list"] + args, check=True, capture_output=True, text=True).stdout
    ckpt = {}
    for line in out.splitlines():
        name, shape = line.split(" ", 1)
        dims = [int(x) for x in shape.strip("[]").split(",") if x.strip()]
        ckpt[name] = torch.empty(dims, device="meta")
    return ckpt


def compare(what, converted, model, ignore=()):
    if any(v.device.type != "meta" for v in converted.values()):
        converted = {k: v.float() for k, v in converted.items() if k not in ignore}
        model.load_state_dict(converted, strict=True)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in ignore}
    got = {k: tuple(v.shape) for k, v in converted.items() if k not in ignore}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    ok = not (missing or extra or wrong)
    print(f"  {what}: {len(got)} tensors {'OK' if ok else 'MISMATCH'}")
    for k in missing[:10]:
        print("    missing", k, want[k])
    for k in extra[:10]:
        print("    extra", k, got[k])
    for k in wrong[:10]:
        print("    shape", k, got[k], "want", want[k])
    return ok


def check(tool, name, c, path=None):
    print(name if path is None else "%s (%s)" % (name, path))
    if path is None:
        ckpt = listing(tool, c["args"])
    else:
        from safetensors.torch import load_file
        ckpt = load_file(path)
    levels = len(c["mult"])
    res = [2 ** i for i in range(levels)]
    original = {"model": {"params": {
        "unet_config": {"params": {
            "in_channels": c["inc"], "out_channels": 4, "model_channels": c["mc"], "channel_mult": c["mult"],
            "attention_resolutions": [r for r, a in zip(res, c["attn"]) if a], "num_res_blocks": c["nrb"],
            "transformer_depth": c["depth"], "context_dim": c["ctx"], "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {
            "ch": c["vae"][0], "ch_mult": c["vae"][1], "num_res_blocks": c["vae"][2], "z_channels": 4,
            "in_channels": 3, "out_ch": 3}}}}}}
    ok = True
    device = torch.device("meta" if path is None else "cpu")
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    with device:
        unet = UNet2DConditionModel(**ucfg)
    n_unet = sum(k.startswith("model.diffusion_model.") for k in ckpt)
    conv = sfu.convert_ldm_unet_checkpoint(ckpt, ucfg)
    ok &= compare("unet", conv, unet) and len(conv) == n_unet

    vcfg = sfu.create_vae_diffusers_config_from_ldm(original, ckpt, image_size=512)
    with device:
        vae = AutoencoderKL(**vcfg)
    vae_ckpt = {k[len("first_stage_model."):]: v for k, v in ckpt.items() if k.startswith("first_stage_model.")}
    conv = sfu.convert_ldm_vae_checkpoint(vae_ckpt, vcfg)
    ok &= compare("vae", conv, vae) and len(conv) == len(vae_ckpt)

    w, layers, inter = c["clip"]
    tcfg = CLIPTextConfig(hidden_size=w, num_hidden_layers=layers, intermediate_size=inter,
                          num_attention_heads=w // 64, max_position_embeddings=77, vocab_size=49408,
                          hidden_act="quick_gelu")
    with device:
        text = CLIPTextModel(tcfg)
    conv = sfu.convert_ldm_clip_checkpoint(ckpt)
    if not any(k.startswith("text_model.") for k in text.state_dict()):  # transformers 5 drops the prefix
        conv = {k[len("text_model."):]: v for k, v in conv.items()}
    ok &= compare("clip", conv, text, ignore=("embeddings.position_ids", "text_model.embeddings.position_ids"))
    if path is not None and ok:
        ok &= forward(unet, vae, text, c)
    return ok


def forward(unet, vae, text, c):
    """Runs each model once on small inputs: activations must stay finite and of sane size."""
    torch.manual_seed(0)
    with torch.no_grad():
        unet, vae, text = unet.float(), vae.float(), text.float()
        ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368] + [49407] * 71])
        hidden = text(ids).last_hidden_state
        eps = unet(torch.randn(1, c["inc"], 8, 8), 500, encoder_hidden_states=hidden).sample
        image = vae.decode(torch.randn(1, 4, 8, 8)).sample
        latent = vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mean
    ok = True
    for name, t in (("clip hidden", hidden), ("unet eps", eps), ("vae decode", image), ("vae encode", latent)):
        good = bool(torch.isfinite(t).all()) and 1e-3 < float(t.std()) < 1e3
        ok &= good
        print("  %s: shape %s mean %.4f std %.4f %s" % (name, tuple(t.shape), float(t.mean()), float(t.std()),
                                                        "OK" if good else "BAD"))
    return ok


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    ok = all([check(tool, name, c) for name, c in CASES.items()])
    if "--file" in sys.argv:
        i = sys.argv.index("--file")
        ok &= check(tool, sys.argv[i + 2], CASES[sys.argv[i + 2]], sys.argv[i + 1])
    print("all layouts match" if ok else "LAYOUT MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
