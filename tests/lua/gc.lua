-- Handles left to the garbage collector free everything they own: graphs never closed,
-- contexts dropped while their graphs live, results, rejected adds (their scratch graph),
-- failed loads and runs. A sanitizer build runs this with LeakSanitizer on; any build checks
-- that collecting in any order works. Prints "gc: ok".
local sdflow = require "sdflow"

for round = 1, 20 do
  local ctx = sdflow.context{cache = false}
  local g = ctx:graph()
  ctx = nil -- the graph keeps the context's C side alive
  local lat = g:add("EmptyLatentImage", {width = 64, height = 64})
  local n = g:add("PrimitiveInt", {value = round})
  assert(not pcall(g.add, g, "EmptyLatentImage", {width = 99999})) -- scratch graph freed
  assert(not pcall(g.add, g, "EmptyLatentImage", {width = n.INT, height = "x"}))
  local r = assert(g:run{outputs = {lat, n}})
  assert(r:get(n) == round)
  assert(#g:xml() > 0)
  assert(not sdflow.load_string("<workflow>", "bad.xml"))
  local bad = g:add("SaveImage")
  assert(not g:run{outputs = {bad}})
  if round % 2 == 0 then g:close() end -- the rest is left to __gc
  g, lat, n, r, bad = nil, nil, nil, nil, nil
  if round % 5 == 0 then collectgarbage("collect") end
end
-- A graph and its handles still alive at exit are freed by lua_close.
local keep = sdflow.context{cache = false}:graph()
local node = keep:add("PrimitiveString", {value = "kept"})
assert(node.STRING)
collectgarbage("collect")
print("gc: ok")
