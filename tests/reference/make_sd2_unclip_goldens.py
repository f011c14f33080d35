#!/usr/bin/env python3
"""Writes the SD2 unCLIP goldens under tests/data/goldens/ from diffusers, transformers and a torch
restatement of ComfyUI's unclip_adm (make_unclip_goldens.py).

The checkpoint is written by the project's own tool (sdflow_mkckpt --preset sd2-unclip-tiny
--seed 31, float32; the C tests write the identical file): SD2's layout with a 192-wide ADM input
(label_emb), an OpenCLIP-H text tower (192 wide, 3 layers), the CLIP image tower at
embedder.model.visual.* (open_clip layout: 128 wide, 2 layers, 8x8 patches of 32x32 images, quick
GELU as ComfyUI's ViT-L config, 96-wide image_embeds) and noise_augmentor.data_mean / data_std
(which sdflow reads when a file has them). The UNet is v-prediction as ComfyUI's SD20.model_type
tells it (output_blocks.11.1's norm1.bias spread).

Conversion: diffusers' convert_ldm_unet_checkpoint into UNet2DConditionModel with
class_embed_type="projection" (the StableUnCLIP UNet: label_emb.0.0/0.2 become class_embedding
linear_1/linear_2, added to the time embedding as the LDM UNet adds label_emb(y));
convert_open_clip_checkpoint into CLIPTextModel; the image tower into CLIPVisionModelWithProjection.

Goldens (SDG1 format):
- sd2_unclip_adm_{embeds,stats,one,two}.bin: unclip_adm of random 96-wide embeddings with the
  file's statistics (seed 42 - 10): one row (strength 0.7, augmentation 0.3), two rows (1.2 / 0.0,
  0.5 / 0.25, merged at 0.05 as SD21UNCLIP does); stats [2, 96] = data_mean, data_std.
- sd2_unclip_unet_{x,context,y,eps}.bin: one UNet forward (batch 2, timesteps 981 and 250.5).
- sd2_unclip_image_embeds.bin: CLIPVisionEncode (crop center) of examples/input/shapes.png.
- sd2_unclip_sample_final.bin: a whole 5-step Euler run (normal schedule, cfg 6, 64x64, seed 99,
  v-prediction): positive CLIPTextEncode("a photo of a cat") + unCLIPConditioning(shapes.png,
  strength 1.0, noise_augmentation 0.3), negative CLIPTextEncode("") with the zero ADM vector; the
  noise is sd2_sample_noise.bin's (seed 99).

Run: python3 tests/reference/make_sd2_unclip_goldens.py [build/sdflow_mkckpt]"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_unet_goldens import write  # noqa: E402
from make_sdxl_goldens import clip_config, load_strict, normal_sigmas, windows  # noqa: E402
from make_clip_vision_goldens import clip_preprocess  # noqa: E402
from make_unclip_goldens import unclip_adm  # noqa: E402

PRESET, SEED = "sd2-unclip-tiny", 31
UNET = {"mc": 64, "mult": [1, 2, 2], "attn": [1, 1, 0], "depth": [1, 2, 0], "middle": 1, "nrb": 3, "ctx": 192,
        "adm": 192}
CLIP_H = {"width": 192, "layers": 3, "inter": 384}
VISION = {"width": 128, "layers": 2, "heads": 2, "inter": 256, "patch": 8, "image": 32, "proj": 96}
H_PREFIX, V_PREFIX = "cond_stage_model.model.", "embedder.model.visual."
TIMESTEPS = [981.0, 250.5]
STEPS, CFG, SIZE, SAMPLE_SEED, STRENGTH, AUGMENT = 5, 6.0, 64, 99, 1.0, 0.3


def make_unet(ckpt):
    channels = [UNET["mc"] * m for m in UNET["mult"]]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in UNET["attn"]]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(UNET["attn"])]
    depths = [d if d else 1 for d in UNET["depth"]]
    depths[-1] = UNET["middle"]  # the last level has no attention: the entry serves the middle block
    unet = UNet2DConditionModel(
        sample_size=None, in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=UNET["nrb"], cross_attention_dim=UNET["ctx"],
        attention_head_dim=[c // 64 for c in channels], transformer_layers_per_block=depths,
        use_linear_projection=True, class_embed_type="projection",
        projection_class_embeddings_input_dim=UNET["adm"], norm_num_groups=32)
    converted = sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    unet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return unet.eval()


def make_clip_h(ckpt):
    model = CLIPTextModel(clip_config(CLIP_H, "gelu"))
    sd = sfu.convert_open_clip_checkpoint(model, ckpt, prefix=H_PREFIX)
    sd = {k: v for k, v in sd.items() if not k.startswith("text_projection")}
    if not any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    return load_strict(model, sd)


def make_vision(ckpt):
    """embedder.model.visual.* (open_clip) -> transformers' CLIPVisionModelWithProjection."""
    v = VISION
    config = CLIPVisionConfig(hidden_size=v["width"], intermediate_size=v["inter"], num_hidden_layers=v["layers"],
                              num_attention_heads=v["heads"], image_size=v["image"], patch_size=v["patch"],
                              projection_dim=v["proj"], hidden_act="quick_gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config)
    g = lambda k: ckpt[V_PREFIX + k].float()  # noqa: E731
    p = "vision_model."
    sd = {p + "embeddings.patch_embedding.weight": g("conv1.weight"),
          p + "embeddings.class_embedding": g("class_embedding"),
          p + "embeddings.position_embedding.weight": g("positional_embedding"),
          "visual_projection.weight": g("proj").t().contiguous()}
    for a, b in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        sd[f"{p}{a}.weight"], sd[f"{p}{a}.bias"] = g(f"{b}.weight"), g(f"{b}.bias")
    w = v["width"]
    for i in range(v["layers"]):
        h, o = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            sd[h + a + ".weight"], sd[h + a + ".bias"] = g(o + b + ".weight"), g(o + b + ".bias")
        wq, bq = g(o + "attn.in_proj_weight"), g(o + "attn.in_proj_bias")
        for k, x in enumerate("qkv"):
            sd[h + f"self_attn.{x}_proj.weight"] = wq[k * w:(k + 1) * w]
            sd[h + f"self_attn.{x}_proj.bias"] = bq[k * w:(k + 1) * w]
    return load_strict(model, sd)


def encode_h(clip_h, ids):
    """SD2ClipHModel: the penultimate hidden state through the final LayerNorm."""
    with torch.no_grad():
        out = clip_h(input_ids=ids, output_hidden_states=True)
        inner = getattr(clip_h, "text_model", clip_h)
        return inner.final_layer_norm(out.hidden_states[-2])


def image_embeds(vision):
    """LoadImage (8-bit RGB / 255) and CLIPVisionEncode (crop center) of examples/input/shapes.png."""
    path = os.path.join(HERE, "..", "..", "examples", "input", "shapes.png")
    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)[None]
    with torch.no_grad():
        return vision(pixel_values=clip_preprocess(img, VISION["image"], True)).image_embeds


def sample(unet, context, y, noise):
    """KSampler euler/normal, v-prediction, CFG over [positive, negative] with their ADM vectors y."""
    sigmas, timestep = normal_sigmas(STEPS)
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    for i in range(STEPS):
        s = torch.tensor([sigmas[i]])
        xin = x / (s ** 2 + 1) ** 0.5
        t = timestep(s).float()
        with torch.no_grad():
            out = unet(torch.cat([xin, xin]), torch.cat([t, t]), encoder_hidden_states=context,
                       class_labels=y).sample
        xx = torch.cat([x, x])
        den = xx * 1.0 / (s ** 2 + 1.0) - out * s * 1.0 / (s ** 2 + 1.0) ** 0.5
        denoised = den[1:] + (den[:1] - den[1:]) * CFG
        x = x + (x - denoised) / s * (sigmas[i + 1] - sigmas[i])
    return x


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/sdflow_mkckpt"
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "unclip.safetensors")
        subprocess.run([tool, "--preset", PRESET, "--seed", str(SEED), path], check=True)
        ckpt = load_file(path)
    bias = ckpt["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"]
    assert float(torch.std(bias, unbiased=False)) > 0.09  # ComfyUI's SD20.model_type: V_PREDICTION
    mean, std = ckpt["noise_augmentor.data_mean"].float(), ckpt["noise_augmentor.data_std"].float()
    dim = UNET["adm"] // 2

    emb = torch.randn(2, dim, generator=torch.Generator().manual_seed(5))
    write("sd2_unclip_adm_embeds.bin", emb.numpy())
    write("sd2_unclip_adm_stats.bin", torch.cat([mean, std]).numpy())
    write("sd2_unclip_adm_one.bin", unclip_adm(emb[:1], [0.7], [0.3], 42 - 10, mean, std, 0.05).numpy())
    write("sd2_unclip_adm_two.bin", unclip_adm(emb, [1.2, 0.5], [0.0, 0.25], 42 - 10, mean, std, 0.05).numpy())

    unet = make_unet(ckpt)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 33, UNET["ctx"], generator=gen)
    y = torch.randn(2, UNET["adm"], generator=gen)
    with torch.no_grad():
        eps = unet(x, torch.tensor(TIMESTEPS), encoder_hidden_states=context, class_labels=y).sample
    for suffix, arr in [("x", x), ("context", context), ("y", y), ("eps", eps)]:
        write("sd2_unclip_unet_%s.bin" % suffix, arr.numpy())
    print("unet: eps std %.4f" % float(eps.std()))

    embeds = image_embeds(make_vision(ckpt))
    write("sd2_unclip_image_embeds.bin", embeds.numpy())
    noise = torch.randn([1, 4, SIZE // 8, SIZE // 8], generator=torch.manual_seed(SAMPLE_SEED))
    cond = encode_h(make_clip_h(ckpt), windows(0))  # [prompt, ""]
    y_pos = unclip_adm(embeds, [STRENGTH], [AUGMENT], SAMPLE_SEED - 10, mean, std, 0.05)
    y = torch.cat([y_pos, torch.zeros_like(y_pos)])  # SD21UNCLIP.encode_adm without unCLIP: zeros
    final = sample(unet, cond, y, noise)
    no_image = sample(unet, cond, torch.zeros_like(y), noise)
    print("the image embedding changes the final latent by %.3g (std of the difference)" %
          float((final - no_image).std()))
    write("sd2_unclip_sample_final.bin", (final / 0.18215).numpy())


if __name__ == "__main__":
    sys.exit(main())
