-- A parameter sweep that reuses the cache: the first pass computes each value once, a second
-- pass over the same values loads everything from the cache, and changing one input re-runs
-- only the nodes downstream of it. Usage: sweep.lua CACHE_DB. Prints "sweep: ok".
local sdflow = require "sdflow"
local db = assert(arg[1], "usage: sweep.lua CACHE_DB")

local ctx <close> = sdflow.context{cache = db}
local g <close> = ctx:graph()
local lat = g:add("EmptyLatentImage", {width = 64, height = 64}, "latent")
local seed = g:add("PrimitiveInt", nil, "seed")
local cfg = g:add("PrimitiveFloat", nil, "cfg")
g:param("seed", "INT", 0, "noise seed")
g:bind("seed", seed, "value")
g:param("cfg", "FLOAT", 7.0, "guidance")
g:bind("cfg", cfg, "value")
local want = {outputs = {lat, seed, cfg}}

local function outcomes(r)
  local o = {}
  for _, n in ipairs(r.stats.nodes) do o[n.id] = n.outcome end
  return o
end

-- First pass: every (seed, cfg) pair is new, the latent is computed once.
local seeds, cfgs = {1, 2, 3}, {5.5, 7.5}
local first = 0
for _, s in ipairs(seeds) do
  for _, c in ipairs(cfgs) do
    g:setparam("seed", s)
    g:setparam("cfg", c)
    local r = assert(g:run(want))
    assert(r:get(seed) == s and r:get(cfg) == c)
    first = first + r.stats.ran
  end
end
-- latent once, seed 3 times, cfg: 5.5 and 7.5 once each
assert(first == 1 + 3 + 2, "first pass ran " .. first .. " nodes")

-- Second pass: everything from the cache.
for _, s in ipairs(seeds) do
  for _, c in ipairs(cfgs) do
    g:setparam("seed", s)
    g:setparam("cfg", c)
    local r = assert(g:run(want))
    assert(r.stats.ran == 0 and r.stats.cached == 3, tostring(r))
    assert(r:get(seed) == s and r:get(cfg) == c and r:get(lat).shape[3] == 8)
  end
end

-- One changed input re-runs exactly its node.
lat.width = 128
local r = assert(g:run(want))
local o = outcomes(r)
assert(o.latent == "ran" and o.seed == "cached" and o.cfg == "cached", tostring(r))
assert(r:get(lat).shape[4] == 16)

-- Without the cache nothing is read or written.
r = assert(g:run{outputs = {lat, seed, cfg}, cache = false})
assert(r.stats.ran == 3 and r.stats.cached == 0, tostring(r))
lat.width = 192
assert(g:run{outputs = {lat}, cache = false})
r = assert(g:run{outputs = {lat}})
assert(r.stats.ran == 1, "a cache = false run stored nothing")

local stats = assert(ctx:cache_stats())
assert(stats.entries == 1 + 3 + 2 + 2, "cache entries: " .. stats.entries)

-- Maintenance: verify finds nothing bad; gc to a budget evicts; clear empties.
assert(ctx:cache_verify() == 0)
assert(ctx:cache_gc("1G") == 0)
local evicted = assert(ctx:cache_gc(stats.bytes - 1))
assert(evicted >= 1 and assert(ctx:cache_stats()).entries == stats.entries - evicted)
assert(ctx:cache_clear() == true and assert(ctx:cache_stats()).entries == 0)
local ok, err = pcall(ctx.cache_gc, ctx, "lots")
assert(not ok and err:find("'lots' is not a size", 1, true), tostring(err))
print("sweep: ok")
