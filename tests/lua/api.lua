-- The sdflow Lua module's graph API: building, value conversion, handles, __close, misuse
-- errors (script:line) and expected failures (nil, message, diagnostics).
-- Runs under `sdflow lua api.lua` and under a stock lua5.4 with LUA_CPATH set; needs a
-- writable current directory for its cache database. Prints "api: ok" when every check passed.
local sdflow = require "sdflow"
local script = arg[0]

-- Calls fn, which must raise exactly `script:line: message` (line: the line of the misuse).
local function raises_at(line, message, fn)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error: " .. message)
  local want = script .. ":" .. line .. ": " .. message
  assert(err == want, "got error\n  " .. tostring(err) .. "\nwanted\n  " .. want)
end

local function here() return debug.getinfo(2, "l").currentline end

local ctx <close> = sdflow.context{cache = "api-cache.db"}

-- Module functions.
assert(sdflow.version:match("^%d+%.%d+%.%d+"), sdflow.version)
local types = sdflow.node_types()
local has = {}
for _, t in ipairs(types) do has[t] = true end
assert(has.PrimitiveInt and has.EmptyLatentImage, "node_types lists the registry")
local d = sdflow.describe("EmptyLatentImage")
assert(d.name == "EmptyLatentImage" and d.outputs[1].name == "LATENT" and d.outputs[1].type == "LATENT")
assert(d.inputs[1].name == "width" and d.inputs[1].type == "INT" and d.inputs[1].default == "512")
assert(d.inputs[1].min == 16 and d.output_node == false)

-- Context options and settings; the module functions use the default context.
local c2 <close> = sdflow.context{models_dirs = {"/models/a", "/models/b"}, input_dir = "/in",
  output_dir = "/out", temp_dir = "/tmp/sdflow-api", cache = false, device = "pthread"}
local set = c2:settings()
assert(set.input_dir == "/in" and set.output_dir == "/out" and set.temp_dir == "/tmp/sdflow-api")
assert(set.cache == false and set.device == "pthread" and tostring(c2) == "sdflow.context (cache off)")
c2:configure{cache = "elsewhere.db", device = false}
assert(c2:settings().cache == "elsewhere.db" and c2:settings().device == nil)
sdflow.configure{output_dir = "/default-out"}
assert(sdflow.settings().output_dir == "/default-out")

-- Building: ids, handles, outputs, tostring.
local g = ctx:graph()
assert(tostring(g) == "sdflow.graph (0 nodes)" and #g == 0)
local lat = g:add("EmptyLatentImage", {width = 256, height = 128})
local seed = g:add("PrimitiveInt", {value = 42}, "seed")
assert(lat.id == "1" and lat.type == "EmptyLatentImage" and seed.id == "seed")
assert(tostring(lat) == "sdflow.node '1' (EmptyLatentImage)")
assert(tostring(lat.LATENT) == "sdflow.output '1'.LATENT")
assert(lat.LATENT.name == "LATENT" and lat.LATENT.node == lat)
assert(g:node("seed") == seed and g:node("nope") == nil and lat.graph == g)
assert(#g == 2 and tostring(g) == "sdflow.graph (2 nodes)")
local nodes = g:nodes()
assert(#nodes == 2 and nodes[1] == lat and nodes[2] == seed)
assert(rawequal(g:node("1"), lat) and ({[lat] = true})[g:nodes()[1]], "one handle per node")

-- Values: integers, floats (shortest text that reads back exactly), booleans, strings.
local f1 = g:add("PrimitiveFloat", {value = 0.1})
local f2 = g:add("PrimitiveFloat", {value = 1 / 3})
local f3 = g:add("PrimitiveFloat", {value = 7.0})
local big = g:add("PrimitiveInt", {value = math.maxinteger})
local b = g:add("PrimitiveBoolean", {value = true})
local s = g:add("PrimitiveString", {value = 'a <cat> & "dog"\tü'})
local w = g:add("PrimitiveInt", {value = 512.0}) -- an integral float is accepted as an INT
local r = assert(g:run{outputs = {lat, seed, f1, f2, f3, big, b, s, w}})
assert(r:get(f1) == 0.1 and r:get(f2) == 1 / 3 and r:get(f3) == 7.0)
assert(math.type(r:get(big)) == "integer" and r:get(big) == math.maxinteger)
assert(r:get(b) == true and r:get(s, "STRING") == 'a <cat> & "dog"\tü' and r:get(w) == 512)
assert(r:get("seed") == 42 and r.outputs.seed.INT == 42)
local latent = r:get(lat, "LATENT")
assert(latent.type == "LATENT" and #latent.shape == 4)
assert(latent.shape[1] == 1 and latent.shape[2] == 4 and latent.shape[3] == 16 and latent.shape[4] == 32)
assert(r.stats.ran + r.stats.cached == 9 and r.stats.skipped == 0 and #r.stats.nodes == 9)
assert(tostring(r):match("^sdflow%.result %(%d+ ran, %d+ cached%)$"))
local v, msg = r:get(lat, "NOPE")
assert(v == nil and msg == "node '1' has no output 'NOPE' in this result")

-- Setting inputs: g:set, node.input = value, nil clears; links by output or one-output node.
g:set(seed, "value", 7)
seed.value = 8
f1.value = nil -- back to the default 0
local n1 = g:add("PrimitiveInt", {value = 64})
local w2 = g:add("EmptyLatentImage", {width = n1.INT}) -- a link to a literal-type input
w2.height = n1
g:connect(n1, "INT", w2, "batch_size")
g:connect(n1.INT, w2, "batch_size")
r = assert(g:run{outputs = {seed, f1, w2}})
assert(r:get(seed) == 8 and r:get(f1) == 0)
r = g:run{outputs = {n1}}
assert(r:get(n1) == 64)

-- Parameters and metadata.
g:param("seed", "INT", 0, "the seed")
g:bind("seed", seed, "value")
local p = g:params()[1]
assert(p.name == "seed" and p.type == "INT" and p.default == "0" and p.doc == "the seed" and p.value == nil)
g:setparam("seed", 1234)
assert(g:params()[1].value == "1234")
assert(assert(g:run{outputs = {seed}}):get(seed) == 1234)
g:meta("title", "API test")
assert(g:meta("title") == "API test" and g:meta("author") == nil)
g:meta("title", nil)
assert(g:meta("title") == nil)

-- A failing progress function stops the run and its error is raised when run returns.
local kinds = {}
assert(g:run{outputs = {seed}, cache = false, progress = function(ev) kinds[#kinds + 1] = ev.kind end})
assert(kinds[1] == "plan" and kinds[#kinds] == "done", table.concat(kinds, ","))
do
  local line = here() + 1
  local ok, err = pcall(g.run, g, {outputs = {seed}, cache = false, progress = function() error("stop here") end})
  assert(not ok and err == script .. ":" .. line .. ": stop here", tostring(err))
end

-- Misuse raises with the script's line.
local g2 = ctx:graph()
local other = g2:add("PrimitiveInt")
local n = #g
raises_at(here(), "unknown node type 'NoSuchNode'", function() g:add("NoSuchNode") end)
raises_at(here(), "node type EmptyLatentImage has no input 'widht'", function() g:add("EmptyLatentImage", {widht = 64}) end)
raises_at(here(), "EmptyLatentImage inputs are named: got a number key", function() g:add("EmptyLatentImage", {64}) end)
raises_at(here() + 1, "node '" .. n .. "' input 'width': 99999 is out of range [16, 16384]",
  function() g:add("EmptyLatentImage", {height = 64, width = 99999}) end)
raises_at(here() + 1, "cannot link STRING output 'STRING' of node '" .. s.id .. "' to INT input 'width' of node 'x'",
  function() g:add("EmptyLatentImage", {width = s}, "x") end)
assert(#g == n, "a rejected add adds nothing")
assert(g:add("PrimitiveInt").id == tostring(n), "the smallest free number")
raises_at(here(), "node '1' (EmptyLatentImage) has no input 'depth'", function() lat.depth = 3 end)
raises_at(here(), "node '1' input 'width': 99999 is out of range [16, 16384]", function() lat.width = 99999 end)
raises_at(here(), "node '1' input 'width': 'wide' is not an integer", function() g:set(lat, "width", "wide") end)
raises_at(here() + 1, "node '1' input 'width': cannot use a table value (number, boolean, string, node output or nil)",
  function() lat.width = {} end)
raises_at(here(), "node '1' (EmptyLatentImage) has no output 'IMAGE' (outputs: LATENT)", function() return lat.IMAGE end)
raises_at(here(), "node 'seed' (PrimitiveInt) has no output 'int' (outputs: INT)", function() return seed.int end)
raises_at(here() + 1, "cannot link STRING output 'STRING' of node '" .. s.id .. "' to INT input 'width' of node '1'",
  function() lat.width = s.STRING end)
raises_at(here(), "node '1' belongs to another graph", function() g2:set(lat, "width", 64) end)
raises_at(here(), "node '1' belongs to another graph", function() other.value = lat end)
raises_at(here(), "duplicate node id 'seed'", function() g:add("PrimitiveInt", nil, "seed") end)
raises_at(here(), "no parameter 'cfg'", function() g:setparam("cfg", 7.5) end)
raises_at(here(), "parameter 'seed': 'x' is not an integer", function() g:setparam("seed", "x") end)
raises_at(here(), "bad argument #1 to 'add' (string expected, got table)", function() g:add({}) end)
raises_at(here(), "unknown run option 'output' (outputs, cache, progress)", function() g:run{output = {lat}} end)
raises_at(here() + 2,
  "unknown context option 'models' (models_dirs, input_dir, output_dir, temp_dir, allow_absolute_paths, cache, device, precision)",
  function() sdflow.context{models = "x"} end)
raises_at(here() + 1, "context option 'allow_absolute_paths': true or false, not a string",
  function() sdflow.context{allow_absolute_paths = "yes"} end)
raises_at(here(), "context option 'models_dirs': a string or a list of strings, not a number", function() c2:configure{models_dirs = 3} end)
raises_at(here(), "context option 'cache': a path or false, not true", function() sdflow.configure{cache = true} end)
raises_at(here(), "context option 'precision': \"fp32\" or \"bf16\", not a number", function() c2:configure{precision = 16} end)
raises_at(here(), "context option 'precision': unknown precision 'fp16' (fp32 or bf16)", function() c2:configure{precision = "fp16"} end)
assert(c2:settings().precision == "fp32")
c2:configure{precision = "bf16"}
assert(c2:settings().precision == "bf16")
raises_at(here() + 1, "run option 'outputs' must list 1 or more nodes (leave it out to run every output node)",
  function() g:run{outputs = {}} end)
raises_at(here(), "bad node: expected an sdflow.node or a node id, got number", function() g:set(3, "value", 1) end)

-- Expected failures return nil, message, diagnostics.
local none, err, diags = sdflow.load("no-such-file.xml")
assert(none == nil and err:find("no-such-file.xml", 1, true) and type(diags) == "table", tostring(err))
none, err, diags = ctx:load_string("<workflow><node", "broken.xml")
assert(none == nil and err:find("broken.xml", 1, true) and type(diags) == "table", tostring(err))
local function write(path, text)
  local file = assert(io.open(path, "w"))
  file:write(text)
  file:close()
end
write("api.json", '{"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}}}')
local imported = assert(ctx:import_comfy("api.json"))
assert(#imported == 1 and imported:node("5").type == "EmptyLatentImage")
assert(assert(imported:run{outputs = {"5"}}):get("5").shape[3] == 4)
-- Export to ComfyUI: API format by default, UI format with ui = true; each imports back.
local api_text = assert(imported:export_comfy())
assert(api_text:find('"class_type": "EmptyLatentImage"', 1, true), api_text)
write("exported_api.json", api_text)
assert(assert(ctx:import_comfy("exported_api.json")):xml():find('name="width" type="INT" default="64"', 1, true))
local ui_text = assert(imported:export_comfy{ui = true})
assert(ui_text:find('"widgets_values"', 1, true) and ui_text:find('"links"', 1, true), ui_text)
write("exported_ui.json", ui_text)
assert(#assert(ctx:import_comfy("exported_ui.json")) == 1)
local grid = ctx:graph()
grid:add("SdflowImageGrid", nil, "grid")
none, err, diags = grid:export_comfy()
assert(none == nil and err == "node 'grid': ComfyUI has no node type 'SdflowImageGrid'" and type(diags) == "table",
  tostring(err))
write("unsupported.json", '{"1": {"class_type": "UltimateSDUpscale", "inputs": {}}}')
none, err, diags = sdflow.import_comfy("unsupported.json")
assert(none == nil and err:find("UltimateSDUpscale", 1, true) and type(diags) == "table", tostring(err))
local g3 = ctx:graph()
g3:add("SaveImage", nil, "save") -- its images input is required
none, err, diags = g3:validate()
assert(none == nil and type(err) == "string" and #diags >= 1, tostring(err))
assert(table.concat(diags, "\n"):find("images", 1, true), table.concat(diags, "\n"))
none, err, diags = g3:run()
assert(none == nil and type(err) == "string" and #diags >= 1, tostring(err))
assert(g:validate() == true)

-- Custom-sampling types: SIGMAS values come back with their shape; the socket types are checked.
local cs = ctx:graph()
local ays = cs:add("AlignYourStepsScheduler", {model_type = "SDXL", steps = 10}, "ays")
local split = cs:add("SplitSigmas", {sigmas = ays.SIGMAS, step = 3}, "split")
local rs = assert(cs:run{outputs = {split}, cache = false})
local low = rs:get(split, "low_sigmas")
assert(low.type == "SIGMAS" and low.shape[1] == 8 and rs:get(split, "high_sigmas").shape[1] == 4)
local adv = sdflow.describe("SamplerCustomAdvanced")
assert(adv.inputs[1].type == "NOISE" and adv.inputs[2].type == "GUIDER" and adv.inputs[3].type == "SAMPLER")
assert(adv.inputs[4].type == "SIGMAS" and adv.outputs[2].name == "denoised_output")
raises_at(here() + 1, "cannot link SIGMAS output 'SIGMAS' of node 'ays' to SAMPLER input 'sampler' of node 'sca'",
  function() cs:add("SamplerCustomAdvanced", {sampler = ays.SIGMAS}, "sca") end)

-- __close frees; a closed graph (and its nodes) raise when used.
local kept, kept_node
do
  local g4 <close> = ctx:graph()
  kept, kept_node = g4, g4:add("PrimitiveInt")
end
assert(tostring(kept) == "sdflow.graph (closed)")
raises_at(here(), "attempt to use a closed sdflow.graph", function() kept:add("PrimitiveInt") end)
raises_at(here(), "attempt to use a closed sdflow.graph", function() kept_node.value = 1 end)
kept:close() -- closing twice is harmless
local kept_ctx
do
  local c <close> = sdflow.context{cache = false}
  kept_ctx = c
  kept = c:graph()
end
assert(tostring(kept_ctx) == "sdflow.context (closed)")
raises_at(here(), "attempt to use a closed sdflow.context", function() kept_ctx:graph() end)
local k = kept:add("PrimitiveInt", {value = 3}) -- the graph keeps its context alive
assert(assert(kept:run{outputs = {k}}):get(k) == 3)

print("api: ok")
