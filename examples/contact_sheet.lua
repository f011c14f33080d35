-- A contact sheet: one prompt over a grid of seeds (rows) and cfg values (columns).
--
--   sdflow lua examples/contact_sheet.lua [MODELS_DIR] [CHECKPOINT] [OUTPUT_DIR] [SIZE] [STEPS]
--
-- Defaults: models, v1-5-pruned-emaonly.safetensors, output, 512, 20. Each cell is its own
-- KSampler + VAEDecode; ImageBatch (a ComfyUI node) collects the cells and SdflowImageGrid
-- (sdflow's own node; ComfyUI has no grid node) lays them out as one PNG. The checkpoint is
-- opened once and its weights shared by every cell; the prompts are encoded once. Run the
-- script again with more seeds: the cells already made come from the cache.
local sdflow = require "sdflow"

local models = arg[1] or "models"
local checkpoint = arg[2] or "v1-5-pruned-emaonly.safetensors"
local size = tonumber(arg[4] or 512)
local steps = tonumber(arg[5] or 20)
local seeds = {1, 2, 3}
local cfgs = {4.0, 7.0, 10.0}

local ctx <close> = sdflow.context{models_dirs = {models}, output_dir = arg[3] or "output"}
local g <close> = ctx:graph()
g:meta("title", "contact sheet")

local ckpt = g:add("CheckpointLoaderSimple", {ckpt_name = checkpoint}, "ckpt")
local positive = g:add("CLIPTextEncode", {clip = ckpt.CLIP, text = "a lighthouse on a cliff at dusk, oil painting"})
local negative = g:add("CLIPTextEncode", {clip = ckpt.CLIP, text = "blurry, low quality"})
local latent = g:add("EmptyLatentImage", {width = size, height = size, batch_size = 1})

local sheet -- the IMAGE output collecting the cells, row by row
for _, seed in ipairs(seeds) do
  for _, cfg in ipairs(cfgs) do
    local sampled = g:add("KSampler", {
      model = ckpt.MODEL, seed = seed, steps = steps, cfg = cfg, sampler_name = "euler",
      scheduler = "normal", positive = positive.CONDITIONING, negative = negative.CONDITIONING,
      latent_image = latent.LATENT, denoise = 1.0,
    })
    local image = g:add("VAEDecode", {samples = sampled.LATENT, vae = ckpt.VAE}).IMAGE
    sheet = sheet and g:add("ImageBatch", {image1 = sheet, image2 = image}).IMAGE or image
  end
end
local grid = g:add("SdflowImageGrid", {images = sheet, columns = #cfgs, spacing = 4}, "grid")
g:add("SaveImage", {images = grid.IMAGE, filename_prefix = "contact_sheet"})

local r, err, problems = g:run{progress = true}
if not r then
  io.stderr:write(err, "\n", table.concat(problems or {}, "\n"), "\n")
  os.exit(3)
end
print(("%d seeds x %d cfg values: %d nodes ran, %d from the cache"):format(#seeds, #cfgs, r.stats.ran, r.stats.cached))
for _, file in ipairs(r.files) do print("wrote " .. file) end
