#!/bin/bash
# /interrupt and /free reach `sdflow worker` processes through Redis: a long prompt run by a
# worker is interrupted by POST /interrupt (history: execution_interrupted, the job
# acknowledged), one named by {prompt_id} likewise, and POST /free makes the worker drop its
# context before its next job. A job delivered again after its history was sent is only
# acknowledged (one image, not two), and a retried job removes the files its earlier attempt
# listed, inside the output directory only. Skipped without redis-server or curl.
. "$(dirname "$0")/lib.bash"
. "$(dirname "$0")/serve_lib.bash"
serve_redis_setup serve_redis_control.sh
dirs=(--models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/out" --no-cache)
"$BIN" serve --port 0 --queue "unix:$SOCK" --queue-db "$T/queue.db" "${dirs[@]}" >"$T/serve.out" 2>"$T/serve.err" &
pids+=($!)
"$BIN" worker --queue "unix:$SOCK" --name w1 "${dirs[@]}" 2>"$T/w1.err" &
pids+=($!)
PORT=$(serve_port "$T/serve.out") || { fail "server did not start: $(cat "$T/serve.err")"; finish serve_redis_control.sh; }
URL=http://127.0.0.1:$PORT

# queue_long SEED: queues a prompt of 10000 steps (it runs until interrupted); prints its id.
queue_long() {
    serve_prompt "$1" 10000 long | serve_api -d @- "$URL/prompt" | grep -o '"prompt_id":"[^"]*"' | cut -d'"' -f4
}
# interrupted ID BODY: waits until the worker runs ID (its job is pending in Redis), posts BODY
# to /interrupt, and waits for ID's history entry with execution_interrupted.
interrupted() {
    local ok=0
    for _ in $(seq 600); do
        redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow | grep -qx w1 && { ok=1; break; }
        sleep 0.1
    done
    [ "$ok" = 1 ] || { fail "the worker did not take prompt $1"; return; }
    sleep 0.5
    serve_api -d "$2" "$URL/interrupt" >/dev/null
    for _ in $(seq 600); do
        serve_api "$URL/history/$1" | grep -q '"execution_interrupted"' && return
        sleep 0.1
    done
    fail "prompt $1 was not interrupted by /interrupt $2: $(serve_api "$URL/history/$1" | head -c 300)"
}
id=$(queue_long 1)
interrupted "$id" '{}'
id=$(queue_long 2)
interrupted "$id" "{\"prompt_id\": \"$id\"}"
pending=$(redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow | head -n 1)
[ "$pending" = 0 ] || fail "$pending interrupted jobs left unacknowledged"

serve_api -d '{"unload_models": true}' "$URL/free" >/dev/null
id=$(serve_prompt 3 2 short | serve_api -d @- "$URL/prompt" | grep -o '"prompt_id":"[^"]*"' | cut -d'"' -f4)
for _ in $(seq 600); do
    serve_api "$URL/history/$id" | grep -q '"status_str":"success"' && break
    sleep 0.1
done
serve_api "$URL/history/$id" | grep -q '"status_str":"success"' || fail "the prompt after /free did not run"
grep -q "w1 dropped its loaded models (/free)" "$T/w1.err" || fail "the worker did not drop its models: $(cat "$T/w1.err")"

# wait_acked: waits until no job is pending in the group.
wait_acked() {
    for _ in $(seq 600); do
        [ "$(redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow | head -n 1)" = 0 ] &&
            [ "$(redis-cli -s "$SOCK" XINFO GROUPS sdflow:jobs | sed -n '/^lag$/{n;p}')" = 0 ] && return
        sleep 0.1
    done
    fail "a redelivered job was not acknowledged: $(tail -n 3 "$T/w1.err")"
}
# The job of the last prompt, delivered again as when its worker died before XACK.
job=$(redis-cli -s "$SOCK" --raw XREVRANGE sdflow:jobs + - COUNT 1 | sed -n 5p)
redis-cli -s "$SOCK" XADD sdflow:jobs '*' prompt_id "$id" job "$job" >/dev/null
wait_acked
grep -q "prompt $id already ran; acknowledged" "$T/w1.err" || fail "the redelivered job was not recognised"
[ "$(ls "$T/out" | grep -c '^short_')" = 1 ] || fail "the redelivered job wrote again: $(ls "$T/out")"

# A retry of a job whose earlier attempt died after writing a file: the file goes, names that
# leave the output directory are ignored.
retry=00000000-0000-4000-8000-00000000beef
touch "$T/out/orphan_00001_.png" "$T/keep.png"
redis-cli -s "$SOCK" RPUSH "sdflow:files:$retry" '{"filename":"orphan_00001_.png","subfolder":"","type":"output"}' \
    '{"filename":"keep.png","subfolder":"..","type":"output"}' >/dev/null
redis-cli -s "$SOCK" XADD sdflow:jobs '*' prompt_id "$retry" job "$job" >/dev/null
wait_acked
[ ! -e "$T/out/orphan_00001_.png" ] || fail "the earlier attempt's file was not removed"
[ -e "$T/keep.png" ] || fail "a file outside the output directory was removed"
grep -q "removed 1 file(s) of an earlier attempt of prompt $retry" "$T/w1.err" || fail "no removal logged: $(tail -n 3 "$T/w1.err")"
[ "$(redis-cli -s "$SOCK" EXISTS "sdflow:files:$retry")" = 0 ] || fail "the retried job's file list was kept"
finish serve_redis_control.sh
