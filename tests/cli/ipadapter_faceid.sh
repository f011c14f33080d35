#!/bin/bash
# graphs/ipadapter-faceid-embeds.xml end to end on tiny random files (a checkpoint with 22 attn2 layers,
# the tiny CLIP vision model, the FaceID adapters and LoRA of tests/data/goldens, precomputed
# embeddings of two faces with their crops): FACEID PLUS V2, FACEID and FACEID PORTRAIT write a
# PNG with their files found by name; a missing FaceID LoRA, a preset without a model for the
# family, IPAdapterFaceID without face embeddings and a FaceID adapter on IPAdapterAdvanced fail
# with their one-line messages (exit 3). graphs/ipadapter-faceid.xml with InsightFace: the unified
# loader's buffalo_l pack (the tiny SCRFD and ArcFace of tests/data/insightface) finds the face in
# the photo for a FaceID adapter taking 512-wide embeddings; IPAdapterInsightFaceLoader linked to
# IPAdapterFaceID does the same; a detector that finds no face is one line naming the image.
. "$(dirname "$0")/lib.bash"
G="$SRC/tests/data/goldens"
mkdir -p "$T/models/checkpoints" "$T/models/clip_vision" "$T/models/ipadapter" "$T/models/loras" "$T/in"
"$MK" --preset tiny --res-blocks 2 --depth 2 "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset sdxl-tiny "$T/models/checkpoints/xl.safetensors" >/dev/null || { echo "FAIL: mkckpt xl"; exit 1; }
cp "$G/clip_vision_hf.safetensors" "$T/models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
cp "$G/ipa_faceid.safetensors" "$T/models/ipadapter/ip-adapter-faceid_sd15.safetensors"
cp "$G/ipa_faceid_plusv2.safetensors" "$T/models/ipadapter/ip-adapter-faceid-plusv2_sd15.safetensors"
cp "$G/ipa_faceid_portrait.safetensors" "$T/models/ipadapter/ip-adapter-faceid-portrait-v11_sd15.safetensors"
cp "$G/ipa_faceid_lora.safetensors" "$T/models/loras/ip-adapter-faceid-plusv2_sd15_lora.safetensors"
cp "$G/faceid_embeds.safetensors" "$T/in/face.safetensors"
cp "$SRC/examples/input/shapes.png" "$T/in/face.png"
common=(--models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o" --cache "$T/cache.db"
        --set checkpoint=tiny.safetensors --set steps=2 --set width=64 --set height=64)

run 0 run "$SRC/graphs/ipadapter-faceid-embeds.xml" "${common[@]}"
check "FACEID PLUS V2 writes one PNG" test "$(cat "$T/out")" = "$T/o/ipadapter-faceid_00001_.png"
run 3 run "$SRC/graphs/ipadapter-faceid-embeds.xml" "${common[@]}" --set preset=FACEID
check "a missing FaceID LoRA is named" grep -q "node 'faceid_loader' (IPAdapterUnifiedLoaderFaceID): no FaceID LoRA for 'FACEID' in models/loras (looked for ip-adapter-faceid_sd15_lora.safetensors)" "$T/err"
cp "$G/ipa_faceid_lora.safetensors" "$T/models/loras/ip-adapter-faceid_sd15_lora.safetensors"
run 0 run "$SRC/graphs/ipadapter-faceid-embeds.xml" "${common[@]}" --set preset=FACEID --set weight_type="style transfer" \
    --set embeds_scaling="K+V"
check "FACEID writes a PNG" test "$(cat "$T/out")" = "$T/o/ipadapter-faceid_00002_.png"
run 0 run "$SRC/graphs/ipadapter-faceid-embeds.xml" "${common[@]}" --set preset="FACEID PORTRAIT (style transfer)"
check "FACEID PORTRAIT (no LoRA) writes a PNG" test "$(cat "$T/out")" = "$T/o/ipadapter-faceid_00003_.png"
run 3 run "$SRC/graphs/ipadapter-faceid-embeds.xml" "${common[@]}" --set checkpoint=xl.safetensors \
    --set preset="FACEID PLUS - SD1.5 only"
check "a preset without an SDXL model is named" grep -q "the preset 'FACEID PLUS - SD1.5 only' has no SDXL model" "$T/err"

# Without a source of face embeddings, and a FaceID adapter on IPAdapterAdvanced: validation errors.
sed -e '/name="faceid_embeds"/d' "$SRC/graphs/ipadapter-faceid-embeds.xml" >"$T/noembeds.xml"
before=$(ls "$T/o" | wc -l)
run 3 run "$T/noembeds.xml" "${common[@]}"
check "no face embeddings is one line naming the node" grep -qx ".*noembeds.xml:[0-9]*: node 'faceid' input 'faceid_embeds': IPAdapterFaceID needs face embeddings: connect 'insightface' (IPAdapterInsightFaceLoader), load the adapter with IPAdapterUnifiedLoaderFaceID and models/insightface/models/buffalo_l/, or connect 'faceid_embeds' (SdflowLoadFaceIDEmbeds)" "$T/err"
run 3 run "$SRC/graphs/ipadapter.xml" "${common[@]}" --set ipadapter=ip-adapter-faceid_sd15.safetensors \
    --set image=face.png
check "a FaceID adapter on IPAdapterAdvanced is named" grep -qx ".*ipadapter.xml:[0-9]*: node 'ipadapter' input 'ipadapter': a FaceID IP-Adapter: apply it with IPAdapterFaceID" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

# InsightFace: the unified loader brings the pack; the photo's face gives the embedding and crop.
mkdir -p "$T/models/insightface/models/buffalo_l"
cp "$SRC"/tests/data/insightface/tiny_pack/*.onnx "$T/models/insightface/models/buffalo_l/"
cp "$G/ipa_faceid_arcface.safetensors" "$T/models/ipadapter/ip-adapter-faceid_sd15.safetensors"
run 0 run "$SRC/graphs/ipadapter-faceid.xml" "${common[@]}" --set preset=FACEID --set seed=3
check "InsightFace FACEID writes a PNG" test -s "$(cat "$T/out")"
first=$(cat "$T/out")
run 0 run "$SRC/graphs/ipadapter-faceid.xml" "${common[@]}" --set preset=FACEID --set seed=3 --set weight=0
check "the face prompt changes the pixels" bash -c '! cmp -s "$1" "$2"' _ <(idat "$first") <(idat "$(cat "$T/out")")
run 0 nodes IPAdapterFaceID
sed -e 's|<node id="faceid" type="IPAdapterFaceID">|<node id="pack" type="IPAdapterInsightFaceLoader"><input name="provider">CUDA</input><input name="model_name">buffalo_l</input></node>\n&\n    <input name="insightface" from="pack" output="INSIGHTFACE"/>|' \
    "$SRC/graphs/ipadapter-faceid.xml" >"$T/linked.xml"
run 0 run "$T/linked.xml" "${common[@]}" --set preset=FACEID --set seed=3
check "a linked InsightFace loader gives the same pixels" cmp -s <(idat "$first") <(idat "$(cat "$T/out")")
cp "$SRC/tests/data/insightface/blind_pack/det_tiny.onnx" "$T/models/insightface/models/buffalo_l/det_tiny.onnx"
before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/ipadapter-faceid.xml" "${common[@]}" --set preset=FACEID
check "no face found is one line naming the image" grep -qx "sdflow: error: node 'faceid' (IPAdapterFaceID): InsightFace found no face in image 1 of input 'image' (256x192)" "$T/err"
check "nothing written without a face" test "$(ls "$T/o" | wc -l)" = "$before"
rm -r "$T/models/insightface"
run 3 run "$SRC/graphs/ipadapter-faceid.xml" "${common[@]}" --set preset=FACEID
check "without a pack, validation names the missing face source" grep -q "node 'faceid' input 'faceid_embeds': IPAdapterFaceID needs face embeddings" "$T/err"

finish ipadapter_faceid.sh
