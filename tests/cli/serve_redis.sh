#!/bin/bash
# sdflow serve --queue with three `sdflow worker` processes on Redis Streams: 60 prompts, one
# worker killed with SIGKILL mid-job; every prompt finishes, is in /history exactly once with
# status success, and no job is left pending. redis-server listens on a Unix socket in the
# scratch directory (nothing leaves the machine). Skipped without redis-server or curl.
. "$(dirname "$0")/lib.bash"
. "$(dirname "$0")/serve_lib.bash"
serve_redis_setup serve_redis.sh

dirs=(--models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/out" --cache "$T/cache.db")
"$BIN" serve --port 0 --queue "unix:$SOCK" --queue-db "$T/queue.db" "${dirs[@]}" >"$T/serve.out" 2>"$T/serve.err" &
pids+=($!)
declare -A worker
for n in 1 2 3; do
    "$BIN" worker --queue "unix:$SOCK" --name "w$n" --claim-idle 3000 "${dirs[@]}" 2>"$T/w$n.err" &
    worker[w$n]=$!
    pids+=($!)
done
PORT=$(serve_port "$T/serve.out") || { fail "server did not start: $(cat "$T/serve.err")"; finish serve_redis.sh; }


ids=()
for seed in $(seq 60); do
    id=$(serve_prompt "$seed" 8 redis | serve_api -d @- "http://127.0.0.1:$PORT/prompt" | grep -o '"prompt_id":"[^"]*"' | cut -d'"' -f4)
    [ -n "$id" ] || fail "prompt $seed was not queued"
    ids+=("$id")
done

# Kill a worker that holds a job (XPENDING's summary lists consumers with pending entries); the
# job must still be pending for it right after the kill (else it finished just before: kill a
# second one, keeping one alive).
held=0
for attempt in 1 2; do
    victim=
    for _ in $(seq 1200); do
        victim=$(redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow | grep -m1 -x 'w[123]')
        [ -n "$victim" ] && [ -n "${worker[$victim]}" ] && break
        victim=
        sleep 0.1
    done
    [ -n "$victim" ] || break
    kill -9 "${worker[$victim]}"
    worker[$victim]=
    held=$(redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow - + 10 "$victim" | grep -c '^[0-9]*-[0-9]*$')
    [ "$held" -gt 0 ] && break
done
[ "$held" -gt 0 ] || fail "no worker was killed while holding a job"

drained=0
for _ in $(seq 3000); do
    if serve_api "http://127.0.0.1:$PORT/queue" | grep -q '"queue_running":\[\],"queue_pending":\[\]'; then drained=1; break; fi
    sleep 0.2
done
[ "$drained" = 1 ] || fail "the queue did not drain: $(serve_api "http://127.0.0.1:$PORT/queue" | head -c 300);
    server: $(tail -n 5 "$T/serve.err"); workers: $(tail -q -n 3 "$T"/w?.err)"
serve_api "http://127.0.0.1:$PORT/history" >"$T/history.json"
n=$(grep -o '"status_str":"success"' "$T/history.json" | wc -l)
[ "$n" = 60 ] || fail "60 successful prompts in the history, found $n"
for id in "${ids[@]}"; do
    c=$(grep -o "\"$id\":{\"prompt\"" "$T/history.json" | wc -l)
    [ "$c" = 1 ] || fail "prompt $id appears $c times in the history"
done
pending=$(redis-cli -s "$SOCK" XPENDING sdflow:jobs sdflow | head -n 1)
[ "$pending" = 0 ] || fail "$pending jobs still pending in Redis"
finish serve_redis.sh
