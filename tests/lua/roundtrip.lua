-- XML save/load round trip from Lua: a graph with metadata, parameters, links and literals of
-- every kind is saved, loaded back and compared (XML text, nodes, parameters, run results);
-- Lua code inside a workflow is never run; a failed save leaves nothing behind. Usage: roundtrip.lua DIR. Prints "roundtrip: ok".
local sdflow = require "sdflow"
local dir = assert(arg[1], "usage: roundtrip.lua DIR")

local ctx <close> = sdflow.context{cache = false}
local g <close> = ctx:graph()
g:meta("title", "round trip")
g:meta("author", "sdflow tests")
local size = g:add("PrimitiveInt", {value = 320}, "size")
local lat = g:add("EmptyLatentImage", {width = size.INT, height = 128, batch_size = 2}, "latent")
local f = g:add("PrimitiveFloat", {value = 0.1}, "f")
local third = g:add("PrimitiveFloat", {value = 1 / 3}, "third")
local s = g:add("PrimitiveString", {value = 'a <cat> & "dog"'}, "s")
local text = g:add("PrimitiveStringMultiline", {value = "line one\nline two"}, "text")
local flag = g:add("PrimitiveBoolean", {value = true}, "flag")
g:param("seed", "INT", 5, "noise seed")
local seed = g:add("PrimitiveInt", nil, "seed")
g:bind("seed", seed, "value")
local wanted = {"size", "latent", "f", "third", "s", "text", "flag", "seed"}

local path = dir .. "/graph.xml"
assert(g:save(path))
local xml = g:xml()
local f_in = assert(io.open(path))
assert(f_in:read("a") == xml, "saved file and g:xml() agree")
f_in:close()

local back <close> = assert(ctx:load(path))
assert(back:xml() == xml, "load(save(g)) writes the same XML")
assert(back:meta("title") == "round trip" and back:meta("author") == "sdflow tests")
assert(#back == #g)
for i, n in ipairs(g:nodes()) do
  local m = back:nodes()[i]
  assert(m.id == n.id and m.type == n.type)
end
local p = back:params()[1]
assert(#back:params() == 1 and p.name == "seed" and p.type == "INT" and p.default == "5" and p.doc == "noise seed")

local again <close> = assert(ctx:load_string(xml, "again.xml"))
assert(again:xml() == xml)

local function results(graph)
  local nodes = {}
  for i, id in ipairs(wanted) do nodes[i] = graph:node(id) end
  return assert(graph:run{outputs = nodes})
end
local r1, r2 = results(g), results(back)
for _, id in ipairs({"size", "f", "third", "s", "text", "flag", "seed"}) do
  assert(r1:get(id) == r2:get(id), id)
end
assert(r2:get("third") == 1 / 3 and r2:get("f") == 0.1 and r2:get("text") == "line one\nline two")
assert(r2:get("s") == 'a <cat> & "dog"' and r2:get("flag") == true and r2:get("seed") == 5)
local l = r2:get("latent")
assert(l.shape[1] == 2 and l.shape[3] == 16 and l.shape[4] == 40)

-- resolve = true writes the current parameter values as defaults.
back:setparam("seed", 9)
assert(back:save(dir .. "/resolved.xml", {resolve = true}))
local resolved <close> = assert(ctx:load(dir .. "/resolved.xml"))
assert(resolved:params()[1].default == "9")
assert(assert(resolved:run{outputs = {resolved:node("seed")}}):get("seed") == 9)

-- inline_params turns parameter bindings into literals of their current values.
back:inline_params()
assert(#back:params() == 0 and not back:xml():find("param=", 1, true))
assert(back:xml():find('<input name="value">9</input>', 1, true))

-- Lua code in a workflow is data: loading and running it runs no Lua.
local marker = dir .. "/ran-lua"
local code = 'os.execute("touch ' .. marker .. '")'
local data = ctx:graph()
data:add("PrimitiveString", {value = code}, "code")
data:meta("description", code)
local loaded <close> = assert(ctx:load_string(data:xml(), "code.xml"))
data:close()
assert(assert(loaded:run{outputs = {"code"}}):get("code") == code)
assert(not io.open(marker), "a workflow ran Lua")

-- A save that fails returns nil, message and writes nothing.
local ok, err = g:save(dir .. "/missing/graph.xml")
assert(ok == nil and err:find(dir .. "/missing/graph.xml", 1, true), tostring(err))
local listing = io.popen('ls -A "' .. dir .. '"'):read("a")
assert(listing == "graph.xml\nresolved.xml\n", listing)
print("roundtrip: ok")
