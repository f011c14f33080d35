# Helpers of the `sdflow serve` shell tests (sourced after lib.bash; not a test of its own).

# serve_port FILE: waits (bounded) for the server's "listening on" line in FILE and prints the
# port; prints nothing when it never came.
serve_port() {
    local port=
    for _ in $(seq 600); do
        port=$(sed -n 's/^sdflow serve: listening on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$1" 2>/dev/null)
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

# serve_redis_setup NAME: for the Redis tests: skips the test NAME (exit 0) without
# redis-server, redis-cli or curl; makes the tiny checkpoint and directories under $T; starts
# redis-server on the Unix socket $SOCK (loopback only), its pid and later ones in pids (killed
# on exit).
serve_redis_setup() {
    local tool
    for tool in redis-server redis-cli curl; do
        command -v "$tool" >/dev/null || { echo "$1: skipped (no $tool)"; exit 0; }
    done
    mkdir -p "$T/models/checkpoints" "$T/in" "$T/out"
    "$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
    pids=()
    trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"' EXIT
    SOCK=$T/redis.sock
    redis-server --port 0 --unixsocket "$SOCK" --dir "$T" --save '' --appendonly no >"$T/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do redis-cli -s "$SOCK" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    redis-cli -s "$SOCK" ping | grep -q PONG || { fail "redis-server did not start: $(cat "$T/redis.log")"; finish "$1"; }
}
