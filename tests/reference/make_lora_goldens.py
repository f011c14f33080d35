#!/usr/bin/env python3
"""LoRA and textual-inversion goldens from diffusers/peft and transformers.

The checkpoint and the LoRA are written by the project's own tools, so the C test
(tests/models/test_lora.c) writes the identical files:
    sdflow_mkckpt --preset tiny --no-vae --seed 7 ck.safetensors
    sdflow_mklora --seed 3 ck.safetensors lora.safetensors
(kohya layout: every UNet attention projection, feed-forward Linear and proj_in/proj_out, the
3x3 conv1 of down_blocks.0.resnets.0, and every text-encoder projection; rank 4, alpha 2 on
every key: with per-key alphas, diffusers 0.42 + peft applied one module's alpha to every
text-encoder module, so per-key alphas are tested in C only).

diffusers converts the LDM checkpoint (convert_ldm_unet_checkpoint), the LoRA is loaded with
StableDiffusionPipeline.load_lora_weights (diffusers' own kohya conversion, peft layers) and
fused with fuse_lora at strength 0.8 (UNet) and 1.3 (text encoder). Recorded, float32:
  lora_unet_x.bin, lora_unet_t.bin, lora_unet_context.bin   inputs (batch 2, 16x16, 8 tokens)
  lora_unet_eps.bin                                         the fused UNet's output
  lora_clip_hidden.bin                                      the fused text encoder's last hidden
                                                            state for the window below
Textual inversion: a 2-vector embedding whose values the C test computes from the same formula
(0.05 sin(0.7 i + 1.3 v) over element i of vector v) is appended to transformers' token table
(ids 49408, 49409) and the window [BOS, 320, e0, e1, 539, EOS, EOS...] is encoded by the base
(unpatched) text encoder:
  ti_hidden.bin, ti_pooled.bin (pooled at the first EOS, as ComfyUI)

Run: /opt/refenv/bin/python tests/reference/make_lora_goldens.py [build]   (needs peft)
Format of each .bin: b"SDG1", int32 ndim, int32 dims[ndim], float32 data (little endian)."""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "goldens")
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
MC, MULT, ATTN, NRB, DEPTH, CTX = 32, [1, 2, 2], [1, 1, 0], 1, 1, 64
CLIP_LAYERS, CLIP_INTER = 2, 256
BATCH, H, W, TOKENS = 2, 16, 16, 8
TIMESTEPS = [981.0, 250.5]
UNET_STRENGTH, CLIP_STRENGTH = 0.8, 1.3
WINDOW = [49406, 320, 1125, 539, 320, 2368, 267, 49407]
TI_WINDOW = [49406, 320, 49408, 49409, 539, 49407]


def write(name, arr):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"SDG1")
        f.write(struct.pack("<i", arr.ndim))
        f.write(struct.pack("<%di" % arr.ndim, *arr.shape))
        f.write(arr.tobytes())


def pad(ids):
    return torch.tensor([ids + [49407] * (77 - len(ids))], dtype=torch.long)


def ti_vectors():
    i = np.arange(CTX, dtype=np.float64)
    return np.stack([0.05 * np.sin(0.7 * i + 1.3 * v) for v in range(2)]).astype(np.float32)


def make_unet(ckpt):
    original = {"model": {"params": {"unet_config": {"params": {
        "in_channels": 4, "out_channels": 4, "model_channels": MC, "channel_mult": MULT,
        "attention_resolutions": [2 ** i for i in range(len(MULT)) if ATTN[i]], "num_res_blocks": NRB,
        "transformer_depth": DEPTH, "context_dim": CTX, "num_heads": 8}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    ucfg = sfu.create_unet_diffusers_config_from_ldm(original, ckpt, image_size=512)
    ucfg.pop("sample_size", None)
    unet = UNet2DConditionModel(**ucfg)
    unet.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, ucfg).items()},
                         strict=True)
    return unet.eval()


def make_clip(ckpt):
    sd = {k[len(CLIP_PREFIX):]: v for k, v in ckpt.items() if k.startswith(CLIP_PREFIX)}
    config = CLIPTextConfig(vocab_size=49408, hidden_size=CTX, intermediate_size=CLIP_INTER,
                            num_hidden_layers=CLIP_LAYERS, num_attention_heads=CTX // 64 or 1,
                            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                            bos_token_id=49406, eos_token_id=49407)
    model = CLIPTextModel(config).eval()
    if any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {"text_model." + k: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not [k for k in missing if "position_ids" not in k], missing
    assert not [k for k in unexpected if "position_ids" not in k], unexpected
    return model


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    with tempfile.TemporaryDirectory() as tmp:
        ck, lora = os.path.join(tmp, "ck.safetensors"), os.path.join(tmp, "lora.safetensors")
        subprocess.run([os.path.join(build, "sdflow_mkckpt"), "--preset", "tiny", "--no-vae", "--seed", "7", ck],
                       check=True)
        subprocess.run([os.path.join(build, "sdflow_mklora"), "--seed", "3", ck, lora], check=True)
        ckpt = load_file(ck)
        unet, clip = make_unet(ckpt), make_clip(ckpt)

        # Textual inversion on the base text encoder.
        with torch.no_grad():
            clip.resize_token_embeddings(49410)
            clip.get_input_embeddings().weight[49408:49410] = torch.from_numpy(ti_vectors())
            ids = pad(TI_WINDOW)
            out = clip(input_ids=ids)
            eos = TI_WINDOW.index(49407)
            write("ti_hidden.bin", out.last_hidden_state.numpy())
            write("ti_pooled.bin", out.last_hidden_state[:, eos].numpy())
            clip.resize_token_embeddings(49408)

        vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=clip, tokenizer=None, unet=unet,
                                       scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        before_u = {k: v.clone() for k, v in unet.state_dict().items()}
        before_c = {k: v.clone() for k, v in clip.state_dict().items()}
        pipe.load_lora_weights(lora, adapter_name="test")
        pipe.fuse_lora(components=["unet"], lora_scale=UNET_STRENGTH, adapter_names=["test"])
        pipe.fuse_lora(components=["text_encoder"], lora_scale=CLIP_STRENGTH, adapter_names=["test"])
        pipe.unload_lora_weights()  # keeps the fused weights, drops the peft layers
        # Every patched tensor changed, and one delta is checked against the formula.
        lsd = load_file(lora)
        changed_u = [k for k, v in pipe.unet.state_dict().items() if k in before_u and not torch.equal(v, before_u[k])]
        changed_c = [k for k, v in pipe.text_encoder.state_dict().items() if k in before_c and not torch.equal(v, before_c[k])]
        n_unet = len([k for k in lsd if k.startswith("lora_unet_") and k.endswith(".lora_up.weight")])
        n_te = len([k for k in lsd if k.startswith("lora_te_") and k.endswith(".lora_up.weight")])
        assert len(changed_u) == n_unet and len(changed_c) == n_te, (len(changed_u), n_unet, len(changed_c), n_te)
        # Every fused tensor equals W + strength * alpha / rank * up @ down (reshaped).
        err = 0.0
        for prefix, strength, after, before, changed in (
                ("lora_unet_", UNET_STRENGTH, pipe.unet.state_dict(), before_u, changed_u),
                ("lora_te_", CLIP_STRENGTH, pipe.text_encoder.state_dict(), before_c, changed_c)):
            for key in changed:
                base = prefix + key[:-len(".weight")].replace("text_model.", "text_model_", 1).replace(".", "_")
                if prefix == "lora_te_" and not key.startswith("text_model."):
                    base = prefix + "text_model_" + key[:-len(".weight")].replace(".", "_")
                up, down, alpha = lsd[base + ".lora_up.weight"], lsd[base + ".lora_down.weight"], lsd[base + ".alpha"]
                delta = strength * float(alpha) / down.shape[0] * (up.flatten(1) @ down.flatten(1))
                err = max(err, float((after[key] - before[key] - delta.reshape(after[key].shape)).abs().max()))
        assert err < 1e-6, err
        print("patched %d UNet and %d text-encoder tensors; max delta error %.2g" % (n_unet, n_te, err))

    gen = torch.Generator().manual_seed(4321)
    x = torch.randn(BATCH, 4, H, W, generator=gen)
    context = torch.randn(BATCH, TOKENS, CTX, generator=gen)
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)
    with torch.no_grad():
        eps = pipe.unet(x, t, encoder_hidden_states=context).sample
        hidden = pipe.text_encoder(input_ids=pad(WINDOW)).last_hidden_state
    os.makedirs(OUT, exist_ok=True)
    write("lora_unet_x.bin", x.numpy())
    write("lora_unet_t.bin", t.numpy())
    write("lora_unet_context.bin", context.numpy())
    write("lora_unet_eps.bin", eps.numpy())
    write("lora_clip_hidden.bin", hidden.numpy())
    print("eps std %.4f, clip hidden std %.4f" % (float(eps.std()), float(hidden.std())))


if __name__ == "__main__":
    sys.exit(main())
