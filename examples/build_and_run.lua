-- Build a small workflow in Lua, run it, and read the results back.
--
--   sdflow lua examples/build_and_run.lua [OUTPUT_DIR]
--
-- It loads examples/input/shapes.png, saves a copy (with the workflow embedded in the PNG) to
-- OUTPUT_DIR (default: ./output), and makes an empty latent. Run it twice: the second run
-- loads the image and the latent from the cache (SaveImage always runs: it writes files).
local sdflow = require "sdflow"

-- Directory of this script, to find examples/input wherever it is run from.
local here = arg[0]:match("^(.*)/[^/]*$") or "."

-- A context holds the directories and the cache. An unknown option is an error.
local ctx <close> = sdflow.context{
  input_dir = here .. "/input",          -- where LoadImage looks up "shapes.png"
  output_dir = arg[1] or "output",       -- where SaveImage writes
}

-- `<close>` frees the graph when this variable goes out of scope.
local g <close> = ctx:graph()
g:meta("title", "build and run")

-- g:add(type, inputs, id): inputs are named as in ComfyUI; the id is optional.
local img = g:add("LoadImage", {image = "shapes.png"}, "load")
-- A node's outputs are fields named like ComfyUI's: img.IMAGE, img.MASK.
local save = g:add("SaveImage", {images = img.IMAGE, filename_prefix = "shapes_copy"})
local lat = g:add("EmptyLatentImage", {width = 512, height = 384, batch_size = 2})

-- Inputs can be changed after adding, like table fields or with g:set.
lat.width = 640
g:set(save, "filename_prefix", "example/shapes")

-- Run what the listed nodes need. Without `outputs`, every output node (SaveImage) runs.
-- A failed run returns nil, a message and the list of problems.
local r, err, problems = g:run{outputs = {img, lat, save}, progress = true}
if not r then
  io.stderr:write(err, "\n", table.concat(problems or {}, "\n"), "\n")
  os.exit(3)
end

local image = r:get(img, "IMAGE")      -- {type = "IMAGE", shape = {...}, width, height, batch}
local latent = r:get(lat)              -- a node with one output: no need to name it
print(("image: %dx%d, batch %d"):format(image.width, image.height, image.batch))
print(("latent: %s"):format(table.concat(latent.shape, "x")))
for _, file in ipairs(r.files) do print("wrote " .. file) end
print(("nodes run: %d, from the cache: %d"):format(r.stats.ran, r.stats.cached))
