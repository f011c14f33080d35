#!/bin/bash
# `cmake --install` puts the command, sdflow_mkckpt, libsdflow with headers and a relocatable
# sdflow.pc, the Lua module and the stock workflows into a prefix; a C program builds against it
# through pkg-config, and a stock lua5.4 loads the module. The installed command finds the stock
# workflows by name from any directory, and the README's "Using it" commands work as written with
# it after the quick start (default model directory ./models).
. "$(dirname "$0")/lib.bash"

cmake --install "$BUILD" --prefix "$T/prefix" >"$T/install.log" 2>&1 || { cat "$T/install.log"; fail "cmake --install"; }
for f in bin/sdflow bin/sdflow_mkckpt include/sdflow/sdflow.h include/sdflow/node.h share/sdflow/graphs/txt2img.xml; do
    [ -e "$T/prefix/$f" ] || fail "missing $f"
done
pc=$(find "$T/prefix" -name sdflow.pc | head -1)
lib=$(find "$T/prefix" -name 'libsdflow.so' | head -1)
mod=$(find "$T/prefix" -path '*lua/5.4/sdflow.so' | head -1)
[ -n "$pc" ] && [ -n "$lib" ] && [ -n "$mod" ] || fail "sdflow.pc, libsdflow.so or the Lua module not installed"
cat >"$T/use.c" <<'C'
#include <sdflow/sdflow.h>
#include <stdio.h>
int main(void)
{
    sd_context *ctx;
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    printf("%s\n", sd_version());
    sd_context_free(ctx);
    return 0;
}
C
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs sdflow) || fail "pkg-config sdflow"
# A sanitizer build's library needs its runtimes first: link them into the program, preload
# them into the plain lua5.4.
SAN=$(ldd "$lib" | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
[ -n "$SAN" ] && flags="$flags -fsanitize=address,undefined"
cc "$T/use.c" $flags -Wl,-rpath,"$(dirname "$lib")" -o "$T/use" || fail "compile against the installed library"
[ "$("$T/use")" = "$("$T/prefix/bin/sdflow" version | cut -d' ' -f2)" ] || fail "installed library version"
out=$(LD_PRELOAD="$SAN" LUA_CPATH="$(dirname "$mod")/?.so" lua5.4 -e 'local s = require "sdflow"; print(type(s.graph))') || fail "require sdflow"
[ "$out" = function ] || fail "module has no graph(): $out"

# Stock workflows by name, from a directory that has none: "txt2img.xml" and "graphs/txt2img.xml".
export PATH="$T/prefix/bin:$PATH" SDFLOW_CACHE="$T/cache.db"
unset SDFLOW_MODELS SDFLOW_INPUT SDFLOW_OUTPUT
stock=$(realpath "$T/prefix/share/sdflow/graphs/txt2img.xml")
mkdir -p "$T/elsewhere/models/checkpoints"
cd "$T/elsewhere" || exit 1
sdflow_mkckpt --preset tiny models/checkpoints/v1-5-pruned-emaonly.safetensors >/dev/null || fail "installed sdflow_mkckpt"
for name in txt2img.xml graphs/txt2img.xml; do
    out=$(sdflow validate "$name" 2>&1) || fail "sdflow validate $name: $out"
    [ "$out" = "$stock: ok" ] || fail "validate $name found something else: $out"
done
sdflow run txt2img.xml --help-params >"$T/params" 2>&1 || fail "run txt2img.xml --help-params: $(cat "$T/params")"
grep -q "^parameters of $stock " "$T/params" || fail "--help-params of the stock workflow"
out=$(sdflow validate nothere.xml 2>&1)
[ $? = 3 ] && [ "$out" = "sdflow: error: nothere.xml: No such file or directory" ] || fail "missing workflow: $out"

# The README's "Using it" commands, exactly as written, in a copy of the source tree after the
# quick start (run with the installed commands). The checkpoint is a tiny random one without
# attention at full resolution so that 512x512 at 20 steps takes seconds.
U=$T/user
mkdir -p "$U/models/checkpoints"
cp -r "$SRC/graphs" "$SRC/examples" "$U/"
cd "$U" || exit 1
sdflow_mkckpt --preset tiny --channel-mult 1,1,1 --attention 0,0,0 models/checkpoints/v1-5-pruned-emaonly.safetensors \
    >/dev/null || fail "sdflow_mkckpt"
quick=$(grep -m1 '^sh tools/install-deps.sh && cmake -S . -B build && cmake --build build -j2 && ' "$SRC/README.md")
quick_run=build/sdflow${quick##*&& build/sdflow}
[ "${quick_run#build/sdflow run }" != "$quick_run" ] || fail "README quick start has no run command: $quick"
bash -c "${quick_run#build/}" >"$T/quick.log" 2>&1 || { tail -3 "$T/quick.log"; fail "quick start run: ${quick_run#build/}"; }
[ -s output/txt2img_00001_.png ] || fail "quick start wrote no output/txt2img_00001_.png"
using=$(sed -n '/^## Using it/,/^## /p' "$SRC/README.md" | sed -n '/^```sh$/,/^```$/p' | grep '^sdflow ')
[ "$(echo "$using" | wc -l)" -ge 8 ] || fail "README 'Using it' has no commands"
while IFS= read -r cmd; do
    case "$cmd" in
    "sdflow serve"* | "sdflow worker"*)
        # Long-running services (tests/server, serve_*.sh run them): here only that they exist.
        sdflow "$(echo "$cmd" | cut -d' ' -f2)" --help >"$T/using.log" 2>&1 || fail "README: $cmd --help"
        continue ;;
    esac
    bash -c "$cmd" >"$T/using.log" 2>&1 </dev/null || { tail -3 "$T/using.log"; fail "README: $cmd"; }
done <<<"$using"
[ -s output/txt2img_00002_.png ] || fail "the README's run wrote no output/txt2img_00002_.png"
[ -s output/canny_00001_.png ] || fail "the README's canny run wrote no output/canny_00001_.png"

echo "install: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
