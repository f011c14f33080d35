#!/usr/bin/env python3
"""Writes the T2I-Adapter goldens under tests/data/goldens/.

The adapters are re-written here in PyTorch as ComfyUI builds them (comfy/t2i_adapter/adapter.py:
Adapter with sk=True, its Downsample (a 2x2 average pool padded by H % 2, W % 2, or a stride-2
conv down_opt.op), Adapter_light with its extractors), under ComfyUI's tensor names. Where
diffusers has the same network (T2IAdapter full_adapter, full_adapter_xl, light_adapter) the
script loads the same weights into diffusers' model and asserts equal features, so the module
here is diffusers' numerics. Tiny random configurations in the real layouts:

  t2i_full       SD1 full adapter, 3-channel hint (cin 192), widths 8/16/32/32, block2 1x1,
                 average pools; stored in diffusers' layout (adapter.body.{i}.resnets.{j}.*),
                 which sdflow maps by ComfyUI's prefix table; latent 16x8 (hint 128x64)
  t2i_conv       SD1 full adapter, 1-channel hint (cin 64), 3x3 block2 and in_conv, down_opt.op
                 stride-2 convs (no diffusers counterpart); latent 10x6 (odd sizes)
  t2i_xl         SDXL full adapter (cin 768, unshuffle 16), widths 8/16/32/32; latent 16x8
  t2i_light      light adapter (cin 192, four ResnetBlock_light per level), latent 10x6
                 (ComfyUI's padded pools on odd sizes; diffusers is checked on an even size)

Per configuration: <name>.safetensors (f16 weights; the features are computed from the same
rounded values in float32) and <name>_f<k>.bin, the features k = 0..3 for the
hint 0.5 + 0.5 sin(0.37 i + 0.2) over the flat index i of [2, C, H, W] (float64 -> float32),
which the C test computes too.

The UNet side: ComfyUI adds the features after input blocks 2, 5, 8, 11 (SD1), as diffusers'
down_intrablock_additional_residuals does at the end of each down block. A UNet written by
sdflow_mkckpt --preset tiny --channel-mult 1,2,4,4 --attention 1,1,1,0 --res-blocks 2 --no-clip
--no-vae --seed 5 (widths 32/64/128/128) runs in diffusers with random features of those
shapes at strength 0.8: t2i_unet_x/context/t/f<k>/eps.bin.

Run: python3 tests/reference/make_t2i_goldens.py [build/sdflow_mkckpt]   (torch 2.15, diffusers 0.42)
Format of each .bin: b"SDG1", int32 ndim, int32 dims[ndim], float32 data (little endian)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from diffusers import T2IAdapter, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_controlnet_goldens import write  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")


class Down(nn.Module):
    """ComfyUI's Downsample: a stride-2 conv, or AvgPool2d(2, 2) padded by (H % 2, W % 2)."""

    def __init__(self, c, use_conv):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        if self.use_conv:
            return self.op(x)
        return nn.functional.avg_pool2d(x, 2, 2, padding=[x.shape[2] % 2, x.shape[3] % 2])


class Resnet(nn.Module):
    """ComfyUI's ResnetBlock with sk=True."""

    def __init__(self, cin, cout, down, ksize, use_conv):
        super().__init__()
        self.in_conv = nn.Conv2d(cin, cout, ksize, 1, ksize // 2) if cin != cout else None
        self.block1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.block2 = nn.Conv2d(cout, cout, ksize, 1, ksize // 2)
        self.down = down
        if down:
            self.down_opt = Down(cin, use_conv)

    def forward(self, x):
        if self.down:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.block2(torch.relu(self.block1(x))) + x


class Full(nn.Module):
    def __init__(self, cin, c0, ksize, use_conv, xl):
        super().__init__()
        ch = [c0, 2 * c0, 4 * c0, 4 * c0]
        self.unshuffle = nn.PixelUnshuffle(16 if xl else 8)
        self.conv_in = nn.Conv2d(cin, c0, 3, 1, 1)
        body = []
        for i in range(4):
            for j in range(2):
                first = j == 0 and i > 0
                down = first and (i == 2 if xl else True)
                body.append(Resnet(ch[i - 1] if first else ch[i], ch[i], down, ksize, use_conv))
        self.body = nn.ModuleList(body)

    def forward(self, x):
        x = self.conv_in(self.unshuffle(x))
        out = []
        for i in range(4):
            x = self.body[2 * i + 1](self.body[2 * i](x))
            out.append(x)
        return out


class LightRes(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block1 = nn.Conv2d(c, c, 3, 1, 1)
        self.block2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.block2(torch.relu(self.block1(x))) + x


class Extractor(nn.Module):
    def __init__(self, cin, inter, cout, nrb, down):
        super().__init__()
        self.in_conv = nn.Conv2d(cin, inter, 1)
        self.body = nn.Sequential(*[LightRes(inter) for _ in range(nrb)])
        self.out_conv = nn.Conv2d(inter, cout, 1)
        self.down = Down(cin, False) if down else None

    def forward(self, x):
        if self.down is not None:
            x = self.down(x)
        return self.out_conv(self.body(self.in_conv(x)))


class Light(nn.Module):
    def __init__(self, cin, ch, nrb):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(8)
        self.body = nn.ModuleList([Extractor(cin if i == 0 else ch[i - 1], ch[i] // 4, ch[i], nrb, i > 0)
                                   for i in range(4)])

    def forward(self, x):
        x = self.unshuffle(x)
        out = []
        for b in self.body:
            x = b(x)
            out.append(x)
        return out


def randomize(model, seed, gain=1.0):
    """Normal weights of variance gain / fan-in, rounded to float16 (the files store f16)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan = p[0].numel() if p.ndim > 1 else 1
            p.copy_((torch.randn(p.shape, generator=gen) * (gain / fan) ** 0.5).half().float())
    return model.eval()


def hint_value(shape):
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return torch.from_numpy((0.5 + 0.5 * np.sin(0.37 * i + 0.2)).astype(np.float32).reshape(shape))


def comfy_to_diffusers(sd, light):
    """ComfyUI names -> diffusers' T2IAdapter names (the inverse of ComfyUI's prefix table)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body" and light:
            i = int(parts[1])
            rest = parts[2:]
            if rest[0] == "body":
                rest = ["resnets"] + rest[1:]
            out[".".join(["adapter.body", str(i)] + rest)] = v
        elif parts[0] == "body":
            k_ = int(parts[1])
            i, j = divmod(k_, 2)
            rest = parts[2:]
            if rest[0] in ("in_conv", "down_opt"):
                out[".".join(["adapter.body", str(i)] + rest)] = v
            else:
                out[".".join(["adapter.body", str(i), "resnets", str(j)] + rest)] = v
        else:
            out["adapter." + k] = v
    return out


def check_diffusers(model, sd, kwargs, hint, light=False):
    ref = T2IAdapter(**kwargs).eval()
    ref.load_state_dict(comfy_to_diffusers(sd, light), strict=True)
    with torch.no_grad():
        want = ref(hint)
        got = model(hint)
    for a, b in zip(want, got):
        assert a.shape == b.shape, (a.shape, b.shape)
        err = float((a - b).abs().max())
        assert err < 1e-5, err


def run(name, model, in_ch, h, w):
    hint = hint_value((2, in_ch, h, w))
    with torch.no_grad():
        feats = model(hint)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v.half() for k, v in sd.items()}, os.path.join(OUT, name + ".safetensors"))
    for k, f in enumerate(feats):
        write("%s_f%d.bin" % (name, k), f.numpy())
    print(name, [tuple(f.shape) for f in feats], "std %.3f" % float(feats[-1].std()))
    return sd


def adapters():
    full = randomize(Full(192, 8, 1, False, False), 1)
    sd = run("t2i_full", full, 3, 128, 64)
    check_diffusers(full, sd, dict(in_channels=3, channels=[8, 16, 32, 32], num_res_blocks=2, downscale_factor=8,
                                   adapter_type="full_adapter"), hint_value((2, 3, 128, 64)))
    # stored in diffusers' layout: rewrite the file
    save_file({k: v.half() for k, v in comfy_to_diffusers(sd, False).items()},
              os.path.join(OUT, "t2i_full.safetensors"))

    conv = randomize(Full(64, 8, 3, True, False), 2)
    run("t2i_conv", conv, 1, 80, 48)

    xl = randomize(Full(768, 8, 1, False, True), 3)
    sd = run("t2i_xl", xl, 3, 128, 64)
    check_diffusers(xl, sd, dict(in_channels=3, channels=[8, 16, 32, 32], num_res_blocks=2, downscale_factor=16,
                                 adapter_type="full_adapter_xl"), hint_value((2, 3, 128, 64)))

    light = randomize(Light(192, [8, 16, 32, 32], 4), 4)
    sd = run("t2i_light", light, 3, 80, 48)
    check_diffusers(light, sd, dict(in_channels=3, channels=[8, 16, 32], num_res_blocks=4, downscale_factor=8,
                                    adapter_type="light_adapter"), hint_value((2, 3, 128, 64)), light=True)


UNET_ARGS = ["--preset", "tiny", "--channel-mult", "1,2,4,4", "--attention", "1,1,1,0", "--res-blocks", "2",
             "--no-clip", "--no-vae", "--seed", "5"]
MC, MULT, ATTN, NRB, CTX = 32, [1, 2, 4, 4], [1, 1, 1, 0], 2, 64
B, H, W, TOKENS, STRENGTH = 2, 8, 8, 5, 0.8


def unet(tool):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unet.safetensors")
        subprocess.run([tool] + UNET_ARGS + [path], check=True)
        ckpt = load_file(path)
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": MC, "channel_mult": MULT,
        "attention_resolutions": [2 ** i for i in range(len(MULT)) if ATTN[i]], "num_res_blocks": NRB,
        "transformer_depth": 1, "context_dim": CTX, "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    model = UNet2DConditionModel(**ucfg)
    model.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()},
                          strict=True)
    model.eval()
    gen = torch.Generator().manual_seed(99)
    x = torch.randn(B, 4, H, W, generator=gen)
    context = torch.randn(B, TOKENS, CTX, generator=gen)
    t = torch.tensor([700.0, 120.0])
    widths = [MC * m for m in MULT]
    feats = [torch.randn(B, widths[k], H >> k, W >> k, generator=gen) for k in range(4)]
    with torch.no_grad():
        eps = model(x, t, encoder_hidden_states=context,
                    down_intrablock_additional_residuals=[f * STRENGTH for f in feats]).sample
        plain = model(x, t, encoder_hidden_states=context).sample
    write("t2i_unet_x.bin", x.numpy())
    write("t2i_unet_context.bin", context.numpy())
    write("t2i_unet_t.bin", t.numpy())
    for k, f in enumerate(feats):
        write("t2i_unet_f%d.bin" % k, f.numpy())
    write("t2i_unet_eps.bin", eps.numpy())
    print("unet: eps std %.4f, change by the features %.4f" % (float(eps.std()), float((eps - plain).abs().max())))


def main():
    adapters()
    unet(sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt")


if __name__ == "__main__":
    sys.exit(main())
