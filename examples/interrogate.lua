-- Interrogate every PNG of a folder with the CLIP interrogator and write a CSV (file,caption,prompt).
--
--   sdflow lua examples/interrogate.lua FOLDER [OUT.csv] [MODELS_DIR] [CLIP] [BLIP] [MODE] [LISTS]
--
-- Defaults: interrogate.csv, models, clip-vit-large-patch14.safetensors (transformers' CLIPModel
-- file in MODELS_DIR/clip_vision), blip-large/model.safetensors (in MODELS_DIR/blip, its
-- vocab.txt beside it), best, and the built-in label tables (LISTS: a folder of your own tables
-- in MODELS_DIR/interrogate). The CLIP model and its label features are loaded once for the
-- whole folder; the label features are computed on the first run only (they are kept in the
-- cache), and images already interrogated come from the cache. docs/interrogate.md.
local sdflow = require "sdflow"

local folder = arg[1] or error("usage: sdflow lua examples/interrogate.lua FOLDER [OUT.csv] [MODELS_DIR] [CLIP] [BLIP] [MODE] [LISTS]")
local out_path = arg[2] or "interrogate.csv"
local ctx <close> = sdflow.context{models_dirs = {arg[3] or "models"}, input_dir = folder}
local g <close> = ctx:graph()
local load = g:add("LoadImage", {image = "none.png"}, "load")
local ci = g:add("CLIPInterrogate", {
  image = load.IMAGE,
  clip_name = arg[4] or "clip-vit-large-patch14.safetensors",
  blip_name = arg[5] or "blip-large/model.safetensors",
  mode = arg[6] or "best",
  lists_dir = arg[7] or "",
}, "interrogate")

-- The PNG files of the folder, sorted.
local names = {}
local ls = assert(io.popen('ls -1 "' .. folder:gsub('"', '\\"') .. '"'))
for name in ls:lines() do
  if name:lower():match("%.png$") then names[#names + 1] = name end
end
ls:close()
table.sort(names)

local function csv(s) return '"' .. s:gsub('"', '""'):gsub("\n", " ") .. '"' end

local out = assert(io.open(out_path, "w"))
out:write("file,caption,prompt\n")
for i, name in ipairs(names) do
  load.image = name
  local r, err = g:run{outputs = {ci}}
  if not r then
    io.stderr:write(name, ": ", err, "\n")
    os.exit(3)
  end
  local report = r:get(ci, "json")
  local caption = report:match('"caption":%s*"(.-)"') or ""
  out:write(csv(name), ",", csv(caption), ",", csv(r:get(ci, "prompt")), "\n")
  io.stderr:write(("[%d/%d] %s\n"):format(i, #names, name))
end
out:close()
print(("wrote %s (%d images)"):format(out_path, #names))
