# Helpers of the `sdflow serve` shell tests (sourced after lib.bash; not a test of its own).

# serve_port FILE: waits (bounded) for the server's "listening on" line in FILE and prints the
# port; prints nothing when it never came.
serve_port() {
    local port=
    for _ in $(seq 600); do
        port=$(sed -n 's/^sdflow serve: listening on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$1")
        if [ -n "$port" ]; then echo "$port"; return 0; fi
        sleep 0.2
    done
    return 1
}

# serve_prompt SEED STEPS PREFIX: a POST /prompt body with ComfyUI's default graph on the tiny
# checkpoint (tiny.safetensors) at 64x64.
serve_prompt() {
    printf '{"prompt": {"3": {"class_type": "KSampler", "inputs": {"seed": %d, "steps": %d, "cfg": 8,
 "sampler_name": "euler", "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
 "negative": ["7", 0], "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text", "clip": ["4", 1]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "%s", "images": ["8", 0]}}}}' "$1" "$2" "$3"
}

# serve_api ARGS...: curl with a bounded time.
serve_api() { curl -sS --max-time 120 "$@"; }
