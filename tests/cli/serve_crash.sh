#!/bin/bash
# sdflow serve killed with SIGKILL while a prompt runs: after a restart on the same queue
# database every queued prompt runs, each appears exactly once in /history with its image, and
# the queue ends empty. Drives the server with curl over loopback.
. "$(dirname "$0")/lib.bash"
. "$(dirname "$0")/serve_lib.bash"
command -v curl >/dev/null || { echo "serve_crash.sh: skipped (no curl)"; exit 0; }
mkdir -p "$T/models/checkpoints" "$T/in" "$T/out"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
SERVER_PID=
trap 'if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null; fi; rm -rf "$T"' EXIT

# start: runs the server in the background, sets SERVER_PID and PORT (bounded wait). Each start
# writes its own stdout file: with one file, truncated by the background job, serve_port could
# read the killed server's "listening on" line before the truncation and go on with a dead port
# (the flaky "queue did not drain" failure, seen under ASan where start-up is slow).
STARTS=0
start() {
    STARTS=$((STARTS + 1))
    local out=$T/serve$STARTS.out
    "$BIN" serve --port 0 --queue-db "$T/queue.db" --models-dir "$T/models" --input-dir "$T/in" \
        --output-dir "$T/out" --cache "$T/cache.db" >"$out" 2>>"$T/serve.err" &
    SERVER_PID=$!
    PORT=$(serve_port "$out") && return 0
    fail "server did not start: $(cat "$T/serve.err")"
    return 1
}

start || finish serve_crash.sh
ids=()
for seed in 1 2 3 4; do
    id=$(serve_prompt "$seed" 30 crash | serve_api -d @- "http://127.0.0.1:$PORT/prompt" | grep -o '"prompt_id":"[^"]*"' | cut -d'"' -f4)
    [ -n "$id" ] || fail "prompt $seed was not queued"
    ids+=("$id")
done

# Kill while a prompt runs (not before the first has started).
running=0
for _ in $(seq 1200); do
    if serve_api "http://127.0.0.1:$PORT/queue" | grep -q '"queue_running":\[\['; then running=1; break; fi
    sleep 0.1
done
[ "$running" = 1 ] || fail "no prompt started running: $(tail -n 5 "$T/serve.err")"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null
SERVER_PID=

start || finish serve_crash.sh
empty=0
for _ in $(seq 1500); do
    if serve_api "http://127.0.0.1:$PORT/queue" | grep -q '"queue_running":\[\],"queue_pending":\[\]'; then empty=1; break; fi
    sleep 0.2
done
[ "$empty" = 1 ] || fail "the queue did not drain after the restart: $(serve_api "http://127.0.0.1:$PORT/queue" |
    head -c 300); server stderr: $(tail -n 5 "$T/serve.err")"
serve_api "http://127.0.0.1:$PORT/history" >"$T/history.json"
n=$(grep -o '"status_str":"success"' "$T/history.json" | wc -l)
[ "$n" = 4 ] || fail "4 successful prompts in the history, found $n: $(head -c 2000 "$T/history.json")"
for id in "${ids[@]}"; do
    c=$(grep -o "\"$id\":{\"prompt\"" "$T/history.json" | wc -l)
    [ "$c" = 1 ] || fail "prompt $id appears $c times in the history"
done
for f in $(grep -o '"filename":"[^"]*"' "$T/history.json" | cut -d'"' -f4); do
    [ -s "$T/out/$f" ] || fail "history names $f, which is not in the output directory"
done
kill "$SERVER_PID"
wait "$SERVER_PID" || fail "server exit status $? after SIGTERM: $(tail -n 20 "$T/serve.err")"
SERVER_PID=
finish serve_crash.sh
