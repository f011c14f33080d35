-- A parameter sweep that reuses the cache.
--
--   sdflow lua examples/sweep.lua [CACHE_DB]
--
-- The workflow declares parameters (like `sdflow run --set name=value`) and the script loops
-- over their values. Each output is cached under a key made from the node's inputs and its
-- upstream keys, so every run recomputes only what changed, and running the script a second
-- time computes nothing. With a sampler the same loop sweeps seeds and cfg values of a
-- txt2img workflow; here small nodes stand in for it.
local sdflow = require "sdflow"

-- The cache is the usual one ($SDFLOW_CACHE, else $XDG_CACHE_HOME/sdflow/cache.db, else
-- ~/.cache/sdflow/cache.db) unless a path is given; it persists, so a second run of the script
-- loads every value from it.
local ctx <close> = sdflow.context(arg[1] and {cache = arg[1]} or nil)
local g <close> = ctx:graph()

-- The expensive, shared part of the graph: it does not depend on the swept values.
local lat = g:add("EmptyLatentImage", {width = 768, height = 512, batch_size = 4}, "latent")
-- Stand-ins for a sampler's seed and cfg inputs.
local seed = g:add("PrimitiveInt", nil, "seed")
local cfg = g:add("PrimitiveFloat", nil, "cfg")

-- Parameters: a name, a type, a default and a one-line doc; bound to node inputs.
g:param("seed", "INT", 0, "noise seed")
g:bind("seed", seed, "value")
g:param("cfg", "FLOAT", 7.0, "classifier-free guidance scale")
g:bind("cfg", cfg, "value")

for _, s in ipairs{1, 2, 3} do
  for _, c in ipairs{5.0, 7.5} do
    g:setparam("seed", s)
    g:setparam("cfg", c)
    local r = assert(g:run{outputs = {lat, seed, cfg}})
    -- r.stats.nodes lists each node with outcome "ran", "cached" or "skipped".
    local ran = {}
    for _, n in ipairs(r.stats.nodes) do
      if n.outcome == "ran" then ran[#ran + 1] = n.id end
    end
    print(("seed %d cfg %.1f -> seed %d, cfg %.1f; ran: %s; cached: %d"):format(
      s, c, r:get(seed), r:get(cfg), #ran > 0 and table.concat(ran, ", ") or "nothing",
      r.stats.cached))
  end
end

local stats = assert(ctx:cache_stats())
print(("cache: %d entries, %d bytes"):format(stats.entries, stats.bytes))
