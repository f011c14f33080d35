#!/usr/bin/env python3
"""Goldens for inpainting and the tiled VAE, from torch transcriptions of ComfyUI's definitions
(nodes.py VAEEncodeForInpaint, comfy/utils.py tiled_scale, comfy/sd.py VAE.decode_tiled_ and
encode_tiled_) run with diffusers' AutoencoderKL and UNet2DConditionModel on the project's tiny
random models.

Files (tests/data/goldens/, little endian):
  inpaint_image.u8      44x52 RGB bytes (the C test writes them as a PNG for LoadImage)
  inpaint_mask.u8       20x24 bytes, a mask of another size than the image (LoadImageMask, red)
  inpaint_mask_resized.f32   [1, 1, 40, 48] the mask resized to the image and centre-cropped
  inpaint_noise_mask.f32     [1, 1, 40, 48] VAEEncodeForInpaint's grown noise mask (grow 6)
  inpaint_latent.f32         [1, 4, 5, 6]   VAEEncodeForInpaint's latent (masked pixels grey)
  tiled_image.u8        96x128 RGB bytes
  tiled_latent.f32           [1, 4, 12, 16] VAEEncode (untiled) of tiled_image
  tiled_decoded.f32          [1, 96, 128, 3] VAEDecodeTiled(tile_size 64, overlap 16) of it
  tiled_encoded.f32          [1, 4, 12, 16] VAEEncodeTiled(tile_size 64, overlap 16) of tiled_image
  unet9_x.bin, unet9_t.bin, unet9_context.bin, unet9_eps.bin   a 9-channel UNet forward (SDG1)

The VAE is the standalone tiny VAE of make_vae_goldens.py (sdflow_mkckpt --preset tiny --kind
vae --seed 5); the UNet is sdflow_mkckpt --preset tiny --in-channels 9 --no-clip --no-vae
--seed 11 (the sd-v1-5-inpainting layout at tiny size).

    /opt/refenv/bin/python tests/reference/make_inpaint_goldens.py build/sdflow_mkckpt

C side: tests/nodes/test_inpaint_nodes.c, tests/nodes/test_vae_tiled.c,
tests/models/test_unet_inpaint.c.
"""
import itertools
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
VAE_CH, VAE_MULT = 32, (1, 2, 2, 2)
UNET_ARGS = ["--preset", "tiny", "--in-channels", "9", "--no-clip", "--no-vae", "--seed", "11"]


def write_raw(name, arr, dtype):
    np.ascontiguousarray(arr, dtype=dtype).tofile(os.path.join(OUT, name))


def write_sdg(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def load_vae(tool, tmp):
    path = os.path.join(tmp, "vae.safetensors")
    subprocess.run([tool, "--preset", "tiny", "--kind", "vae", "--seed", "5", path], check=True)
    config = dict(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
                  block_out_channels=[VAE_CH * m for m in VAE_MULT], layers_per_block=1,
                  down_block_types=["DownEncoderBlock2D"] * len(VAE_MULT),
                  up_block_types=["UpDecoderBlock2D"] * len(VAE_MULT), sample_size=64)
    vae = AutoencoderKL(**config).eval()
    vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(load_file(path), vae.config), strict=True)
    return vae


# ---- ComfyUI's VAE wrapper, transcribed (comfy/sd.py): IMAGE [B, H, W, 3] in [0, 1] ----

def encode_fn(vae):
    # first_stage_model.encode(process_input(x)): the posterior mean, NCHW in.
    return lambda a: vae.encode(a * 2.0 - 1.0).latent_dist.mean


def decode_fn(vae):
    return lambda z: vae.decode(z).sample


def vae_encode(vae, pixels):
    """VAE.encode: centred crop to multiples of 8 (vae_encode_crop_pixels), then encode."""
    h, w = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
    y0, x0 = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
    pixels = pixels[:, y0:y0 + h, x0:x0 + w, :]
    return encode_fn(vae)(pixels.movedim(-1, 1))


def tiled_scale(samples, function, tile_x, tile_y, overlap, upscale_amount, out_channels):
    """comfy.utils.tiled_scale / tiled_scale_multidim for 2-D tiles, transcribed."""
    tile, dims = (tile_y, tile_x), 2
    scale = lambda v: round(upscale_amount * v)
    output = torch.empty([samples.shape[0], out_channels] + [scale(s) for s in samples.shape[2:]])
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        if all(s.shape[d + 2] <= tile[d] for d in range(dims)):
            output[b:b + 1] = function(s)
            continue
        out = torch.zeros([1, out_channels] + [scale(v) for v in s.shape[2:]])
        out_div = torch.zeros_like(out)
        positions = [range(0, s.shape[d + 2] - overlap, tile[d] - overlap) if s.shape[d + 2] > tile[d] else [0]
                     for d in range(dims)]
        for it in itertools.product(*positions):
            s_in, ups = s, []
            for d in range(dims):
                pos = max(0, min(s.shape[d + 2] - overlap, it[d]))
                length = min(tile[d], s.shape[d + 2] - pos)
                s_in = s_in.narrow(d + 2, pos, length)
                ups.append(scale(pos))
            ps = function(s_in)
            mask = torch.ones_like(ps)
            for d in range(2, dims + 2):
                feather = scale(overlap)
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            o, o_d = out, out_div
            for d in range(dims):
                o = o.narrow(d + 2, ups[d], mask.shape[d + 2])
                o_d = o_d.narrow(d + 2, ups[d], mask.shape[d + 2])
            o.add_(ps * mask)
            o_d.add_(mask)
        output[b:b + 1] = out / out_div
    return output


def decode_tiled(vae, samples, tile_size, overlap):
    """VAEDecodeTiled.decode -> VAE.decode_tiled_ (three tilings averaged), process_output."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    tx = ty = tile_size // 8
    ov = overlap // 8
    fn = decode_fn(vae)
    out = (tiled_scale(samples, fn, tx // 2, ty * 2, ov, 8, 3) + tiled_scale(samples, fn, tx * 2, ty // 2, ov, 8, 3)
           + tiled_scale(samples, fn, tx, ty, ov, 8, 3)) / 3.0
    return torch.clamp((out + 1.0) / 2.0, min=0.0, max=1.0).movedim(1, -1)


def encode_tiled(vae, pixels, tile_size, overlap):
    """VAEEncodeTiled.encode -> VAE.encode_tiled_ (three tilings averaged), pixel space tiles."""
    fn = encode_fn(vae)
    x = pixels.movedim(-1, 1)
    s = tiled_scale(x, fn, tile_size, tile_size, overlap, 1 / 8, 4)
    s += tiled_scale(x, fn, tile_size * 2, tile_size // 2, overlap, 1 / 8, 4)
    s += tiled_scale(x, fn, tile_size // 2, tile_size * 2, overlap, 1 / 8, 4)
    return s / 3.0


def encode_for_inpaint(vae, pixels, mask, grow_mask_by=6):
    """nodes.py VAEEncodeForInpaint.encode, transcribed. Returns (latent, noise_mask, resized mask)."""
    x = (pixels.shape[1] // 8) * 8
    y = (pixels.shape[2] // 8) * 8
    mask = F.interpolate(mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])),
                         size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
    pixels = pixels.clone()
    if pixels.shape[1] != x or pixels.shape[2] != y:
        x_offset = (pixels.shape[1] % 8) // 2
        y_offset = (pixels.shape[2] % 8) // 2
        pixels = pixels[:, x_offset:x + x_offset, y_offset:y + y_offset, :]
        mask = mask[:, :, x_offset:x + x_offset, y_offset:y + y_offset]
    if grow_mask_by == 0:
        mask_erosion = mask
    else:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        padding = math.ceil((grow_mask_by - 1) / 2)
        mask_erosion = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
    m = (1.0 - mask.round()).squeeze(1)
    for i in range(3):
        pixels[:, :, :, i] -= 0.5
        pixels[:, :, :, i] *= m
        pixels[:, :, :, i] += 0.5
    latent = vae_encode(vae, pixels)
    return latent, mask_erosion[:, :, :x, :y].round(), mask


def inpaint_inputs():
    yy, xx = np.mgrid[0:44, 0:52].astype(np.float64)
    rng = np.random.default_rng(7)
    img = np.stack([128 + 90 * np.sin(xx / 7 + c) * np.cos(yy / 9 - c) for c in range(3)], axis=-1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    my, mx = np.mgrid[0:20, 0:24].astype(np.float64)
    d = np.sqrt((mx - 13.5) ** 2 + (my - 9.0) ** 2)
    mask = np.clip((6.5 - d) * 80 + 128, 0, 255).astype(np.uint8)  # a disc with a soft edge
    return img, mask


def tiled_inputs():
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float64)
    rng = np.random.default_rng(11)
    img = np.stack([128 + 100 * np.sin(xx / 11 + 2 * c) * np.cos(yy / 13 + c) for c in range(3)], axis=-1)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def unet9(tool, tmp):
    path = os.path.join(tmp, "unet9.safetensors")
    subprocess.run([tool] + UNET_ARGS + [path], check=True)
    ckpt = load_file(path)
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 9, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2, 2],
        "attention_resolutions": [1, 2], "num_res_blocks": 1, "transformer_depth": 1, "context_dim": 64,
        "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    assert ucfg["in_channels"] == 9
    unet = UNet2DConditionModel(**ucfg)
    unet.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()},
                         strict=True)
    unet.eval()
    gen = torch.Generator().manual_seed(99)
    x = torch.randn(2, 9, 16, 16, generator=gen)
    context = torch.randn(2, 77, 64, generator=gen)
    t = torch.tensor([999.0, 421.0])
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=context).sample
    for name, arr in (("unet9_x.bin", x), ("unet9_t.bin", t), ("unet9_context.bin", context),
                      ("unet9_eps.bin", eps)):
        write_sdg(name, arr.numpy())
    print("unet9: eps std %.4f" % float(eps.std()))


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        vae = load_vae(tool, tmp)
        img, mask = inpaint_inputs()
        pixels = torch.from_numpy(img.astype(np.float32) / np.float32(255))[None]
        m = torch.from_numpy(mask.astype(np.float32) / np.float32(255))[None]
        latent, noise_mask, resized = encode_for_inpaint(vae, pixels, m)
        write_raw("inpaint_image.u8", img, np.uint8)
        write_raw("inpaint_mask.u8", mask, np.uint8)
        write_raw("inpaint_mask_resized.f32", resized.numpy(), "<f4")
        write_raw("inpaint_noise_mask.f32", noise_mask.numpy(), "<f4")
        write_raw("inpaint_latent.f32", latent.numpy(), "<f4")
        print("inpaint: noise mask %d of %d, latent std %.4f" % (int(noise_mask.sum()), noise_mask.numel(),
                                                                 float(latent.std())))

        timg = tiled_inputs()
        tpix = torch.from_numpy(timg.astype(np.float32) / np.float32(255))[None]
        tlat = vae_encode(vae, tpix)
        decoded = decode_tiled(vae, tlat, 64, 16)
        whole = torch.clamp((decode_fn(vae)(tlat) + 1.0) / 2.0, 0, 1).movedim(1, -1)
        encoded = encode_tiled(vae, tpix, 64, 16)
        write_raw("tiled_image.u8", timg, np.uint8)
        write_raw("tiled_latent.f32", tlat.numpy(), "<f4")
        write_raw("tiled_decoded.f32", decoded.numpy(), "<f4")
        write_raw("tiled_encoded.f32", encoded.numpy(), "<f4")
        print("tiled: decode vs whole max %.4f mean %.5f; encode vs whole max %.4f" % (
            float((decoded - whole).abs().max()), float((decoded - whole).abs().mean()),
            float((encoded - tlat).abs().max())))
        unet9(tool, tmp)


if __name__ == "__main__":
    sys.exit(main())
