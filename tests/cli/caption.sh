#!/bin/bash
# sdflow caption with the tiny BLIP model of tests/data/goldens (make_blip_goldens.py): one line
# per image, the same caption twice, --max-tokens bounds the words, --json; bad input: no
# vocab.txt beside the model (exit 3, says what is missing), a file that is not BLIP (exit 3,
# names the tensor), a missing image, a bad option value.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/cache.db
unset SDFLOW_INPUT SDFLOW_OUTPUT SDFLOW_MODELS
G=$SRC/tests/data/goldens
mkdir -p "$T/models/blip/tiny" "$T/models/blip/novocab"
cp "$G/blip_tiny.safetensors" "$T/models/blip/tiny/model.safetensors"
cp "$G/blip_vocab.txt" "$T/models/blip/tiny/vocab.txt"
cp "$G/blip_tiny.safetensors" "$T/models/blip/novocab/model.safetensors"
cp "$G/t5_tiny.safetensors" "$T/models/blip/tiny/t5.safetensors"
cp "$SRC/examples/input/shapes.png" "$T/a.png"
cp "$SRC/examples/input/scribble.png" "$T/b.png"
M=(--models-dir "$T/models")

run 0 caption "${M[@]}" --model tiny/model.safetensors "$T/a.png" "$T/b.png"
check "two lines" test "$(wc -l <"$T/out")" = 2
check "words from the vocabulary" grep -qE '^w[0-9]+( |$)' "$T/out"
cp "$T/out" "$T/first"
run 0 caption "${M[@]}" --model tiny/model.safetensors "$T/a.png" "$T/b.png"
check "same captions again (from the cache)" cmp -s "$T/out" "$T/first"

run 0 caption "${M[@]}" --model tiny/model.safetensors --max-tokens 3 --beams 2 --json "$T/a.png"
check "json" python3 -c "import json,sys; d=json.load(open('$T/out')); assert d[0]['image'].endswith('a.png'); assert 1 <= len(d[0]['caption'].split()) <= 3, d"

run 3 caption "${M[@]}" --model novocab/model.safetensors "$T/a.png"
check "missing vocab" grep -q "no vocab.txt beside .*novocab/model.safetensors or in models/blip" "$T/err"
check "one line" test "$(wc -l <"$T/err")" = 1
run 3 caption "${M[@]}" --model tiny/t5.safetensors "$T/a.png"
check "not BLIP" grep -q "t5.safetensors: missing tensor 'vision_model.embeddings.patch_embedding.weight' (BLIP caption model)" "$T/err"
run 3 caption "${M[@]}" --model tiny/model.safetensors "$T/none.png"
check "missing image" grep -q "none.png: no such image" "$T/err"
run 3 caption "${M[@]}" --model tiny/model.safetensors --beams 0 "$T/a.png"
check "beams range" grep -q "num_beams" "$T/err"
run 2 caption "${M[@]}" --model tiny/model.safetensors
check "usage" grep -q "missing the image files" "$T/err"
finish caption
