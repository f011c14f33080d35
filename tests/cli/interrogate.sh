#!/bin/bash
# sdflow interrogate with the tiny CLIP and BLIP models of tests/data/goldens and the tiny label
# tables of tests/data/interrogate (--lists): a prompt line per image in every mode, the given
# caption starts it, --json reports the tables' best labels, an extra table joins the ranking;
# examples/interrogate.lua writes its CSV; bad input: no caption source, a missing extra table,
# a file that is no CLIP model, a missing --lists folder.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/cache.db
unset SDFLOW_INPUT SDFLOW_OUTPUT SDFLOW_MODELS
G=$SRC/tests/data/goldens
mkdir -p "$T/models/blip/tiny" "$T/models/clip_vision" "$T/lists" "$T/models/interrogate/tiny" "$T/folder"
cp "$G/blip_tiny.safetensors" "$T/models/blip/tiny/model.safetensors"
cp "$G/blip_vocab.txt" "$T/models/blip/tiny/vocab.txt"
cp "$G/interrogate_clip.safetensors" "$T/models/clip_vision/tiny.safetensors"
cp "$G/blip_tiny.safetensors" "$T/models/clip_vision/blip.safetensors"
cp "$SRC"/tests/data/interrogate/*.txt "$T/lists/"
cp "$SRC"/tests/data/interrogate/*.txt "$T/models/interrogate/tiny/"
printf 'tabby\nsiamese\nmaine coon\n' >"$T/lists/cats.txt"
cp "$SRC/examples/input/shapes.png" "$T/folder/a.png"
cp "$SRC/examples/input/scribble.png" "$T/folder/b.png"
A=(--models-dir "$T/models" --clip tiny.safetensors --lists "$T/lists" --chunk-size 16 --intermediate-count 24)

for mode in best classic fast negative; do
    run 0 interrogate "${A[@]}" --blip tiny/model.safetensors --mode "$mode" "$T/folder/a.png" "$T/folder/b.png"
    check "$mode: two lines" test "$(wc -l <"$T/out")" = 2
done
run 0 interrogate "${A[@]}" --caption "a small house" --mode fast "$T/folder/a.png"
check "caption first" grep -q '^a small house, ' "$T/out"
run 0 interrogate "${A[@]}" --caption "a small house" --mode classic --json --top 2 --extra-tables cats "$T/folder/a.png"
check "json" python3 -c "
import json; d = json.load(open('$T/out'))[0]
assert d['prompt'].startswith('a small house'), d
assert d['mode'] == 'classic' and d['caption'] == 'a small house', d
t = d['tables']
assert sorted(t) == ['artists', 'cats', 'flavors', 'mediums', 'movements', 'negative', 'trendings'], sorted(t)
assert len(t['cats']) == 2 and all(-1 <= e['score'] <= 1 for e in t['cats']), t['cats']
assert all(e['label'].startswith(('by ', 'inspired by ')) for e in t['artists']), t['artists']"

run 0 lua "$SRC/examples/interrogate.lua" "$T/folder" "$T/out.csv" "$T/models" tiny.safetensors tiny/model.safetensors fast tiny
check "csv" test "$(wc -l <"$T/out.csv")" = 3
check "csv header" grep -q '^file,caption,prompt$' "$T/out.csv"

run 3 interrogate "${A[@]}" "$T/folder/a.png"
check "no caption" grep -q "mode best needs a caption: set blip_name (a BLIP model) or caption" "$T/err"
run 3 interrogate "${A[@]}" --caption x --extra-tables dogs "$T/folder/a.png"
check "missing table" grep -q "label table 'dogs' not found" "$T/err"
run 3 interrogate --models-dir "$T/models" --clip blip.safetensors --caption x "$T/folder/a.png"
check "not CLIP" grep -q "blip.safetensors: no CLIP text tower with its projection" "$T/err"
check "one line" test "$(wc -l <"$T/err")" = 1
run 2 interrogate "${A[@]}" --lists "$T/none" "$T/folder/a.png"
check "missing lists" grep -q "no such directory" "$T/err"
finish interrogate
