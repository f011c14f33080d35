#!/bin/bash
# `cmake --install` puts the command, libsdflow with headers and a relocatable sdflow.pc, and the
# Lua module into a prefix; a C program builds against it through pkg-config, and a stock lua5.4
# loads the module.
. "$(dirname "$0")/lib.bash"

cmake --install "$BUILD" --prefix "$T/prefix" >"$T/install.log" 2>&1 || { cat "$T/install.log"; fail "cmake --install"; }
for f in bin/sdflow include/sdflow/sdflow.h include/sdflow/node.h; do
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
echo "install: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
