#!/bin/bash
# sdflow serve and sdflow worker on the command line: help, usage errors (exit 2), a port in use
# or a database that cannot be opened (exit 5, one-line message), SIGTERM (exit 0).
. "$(dirname "$0")/lib.bash"
. "$(dirname "$0")/serve_lib.bash"
run 0 serve --help
check "serve --help" grep -q '^usage: sdflow serve' "$T/out"
run 0 worker --help
check "worker --help" grep -q '^usage: sdflow worker --queue URL' "$T/out"
run 2 serve --port 70000
check "bad port message" grep -q "^sdflow serve: --port must be 0 to 65535, not '70000'$" "$T/err"
run 2 serve --queue http://host
check "bad queue URL message" grep -q "^sdflow serve: --queue must be redis://HOST\[:PORT\] or unix:PATH" "$T/err"
run 2 serve --front-end "$T"
check "front end without index.html" grep -q "^sdflow serve: --front-end '.*' is not a directory with an index.html$" "$T/err"
run 2 serve --cache a.db --no-cache
run 2 serve extra
run 2 worker
check "worker needs --queue" grep -q "^sdflow worker: --queue URL is required$" "$T/err"
run 2 worker --queue unix:/x --claim-idle 5
run 5 worker --queue "unix:$T/no-such.sock"
check "worker: Redis unreachable" grep -q "^sdflow: error: unix:$T/no-such.sock: " "$T/err"
run 5 serve --port 0 --queue-db "$T/missing/dir/q.db"
check "serve: database cannot be opened" grep -q "^sdflow: error: $T/missing/dir/q.db: unable to open database file$" "$T/err"

"$BIN" serve --port 0 --queue-db "$T/q.db" >"$T/serve.out" 2>"$T/serve.err" &
pid=$!
port=$(serve_port "$T/serve.out")
if [ -n "$port" ]; then
    run 5 serve --port "$port" --queue-db "$T/q2.db"
    check "port in use: one error line naming the address" \
        grep -q "^sdflow: error: cannot listen on 127.0.0.1:$port: " "$T/err"
else
    fail "server did not start: $(cat "$T/serve.err")"
fi
kill "$pid"
wait "$pid" || fail "serve exit status $? after SIGTERM"
finish serve_cli.sh
