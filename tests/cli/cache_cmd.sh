#!/bin/bash
# sdflow cache: stats, verify, gc, clear, usage errors, and a database replaced by random bytes.
. "$(dirname "$0")/lib.bash"
DB=$T/sub/cache.db

# Usage errors: exit 2, a message, and no database created.
run 2 cache gc --cache "$DB"
check "gc without --max-size" grep -q "gc needs --max-size SIZE" "$T/err"
run 2 cache gc --max-size 12Q --cache "$DB"
check "bad size" grep -q "'12Q' is not a size" "$T/err"
run 2 cache stats --max-size 1G --cache "$DB"
check "max-size outside gc" grep -q -- "--max-size is for gc only" "$T/err"
run 2 cache frobnicate --cache "$DB"
check "unknown action" grep -q "unknown action 'frobnicate'" "$T/err"
run 2 cache
check "missing action" grep -q "missing action" "$T/err"
check "no database after usage errors" test ! -e "$DB"
run 0 cache --help
check "help" grep -q "usage: sdflow cache" "$T/out"

# A fresh database (directories created).
run 0 cache stats --cache "$DB"
check "stats entries" grep -q "^entries: *0$" "$T/out"
check "stats budget" grep -qx "budget:      8.0 GiB (least recently used entries are evicted above it)" "$T/out"
SDFLOW_CACHE_MAX_SIZE=0 run 0 cache stats --cache "$DB"
check "stats: 0 is no eviction" grep -qx "budget:      none (SDFLOW_CACHE_MAX_SIZE=0: nothing is evicted)" "$T/out"
check "database created" test -f "$DB"
run 0 cache verify --cache "$DB"
check "verify ok" grep -q ": ok$" "$T/out"
run 0 cache gc --max-size 1M --cache "$DB"
check "gc" grep -q "evicted 0 entries" "$T/out"
SDFLOW_CACHE=$DB run 0 cache clear
check "clear via SDFLOW_CACHE" grep -q "cleared $DB" "$T/out"

# Random bytes: moved aside with a warning, rebuilt, command succeeds.
head -c 65536 /dev/urandom >"$DB"
rm -f "$DB-wal" "$DB-shm"
run 0 cache stats --cache "$DB"
check "corrupt warning" grep -q "was corrupt: moved to $DB.corrupt-" "$T/err"
check "corrupt copy kept" ls "$DB".corrupt-* >/dev/null
check "rebuilt" grep -q "^entries: *0$" "$T/out"

# An unusable location: exit 5 with the path in the message.
touch "$T/file"
run 5 cache stats --cache "$T/file/cache.db"
check "unusable path named" grep -q "$T/file/cache.db" "$T/err"

finish cache_cmd
