-- Load a workflow XML file, change it, and save it under a new name.
--
--   sdflow lua examples/load_modify_save.lua IN.xml OUT.xml [WIDTH]
--
-- Lists the nodes and parameters of IN.xml, sets the parameter "width" (or, when there is
-- none, the width of every EmptyLatentImage), stamps the title, validates, and writes OUT.xml. Loading
-- never runs anything: a workflow file is data.
local sdflow = require "sdflow"

local input, output = arg[1], arg[2]
local width = math.tointeger(tonumber(arg[3] or "768"))
if not (input and output and width) then
  io.stderr:write("usage: sdflow lua load_modify_save.lua IN.xml OUT.xml [WIDTH]\n")
  os.exit(2)
end

-- Expected failures (a missing or malformed file) return nil, a message and the problems.
local g, err, problems = sdflow.load(input)
if not g then
  io.stderr:write(err, "\n", table.concat(problems, "\n"), "\n")
  os.exit(3)
end

print(("%s: %d nodes, title %q"):format(input, #g, g:meta("title") or ""))
for _, node in ipairs(g:nodes()) do
  print(("  node %-8s %s"):format(node.id, node.type))
end
for _, p in ipairs(g:params()) do
  print(("  param %s (%s) = %s  -- %s"):format(p.name, p.type, p.value or p.default or "", p.doc or ""))
end

-- Change it: a parameter by name when the workflow declares one, else the node inputs
-- through their handles (setting an input replaces whatever it was bound to).
local has_width_param = false
for _, p in ipairs(g:params()) do
  if p.name == "width" then has_width_param = true end
end
if has_width_param then
  g:setparam("width", width)
else
  for _, node in ipairs(g:nodes()) do
    if node.type == "EmptyLatentImage" then
      node.width = width -- checked against the node's descriptor (type, range) at once
    end
  end
end
g:meta("title", (g:meta("title") or input) .. " (width " .. width .. ")")

-- Validation reports every problem at once.
local ok, msg, list = g:validate()
if not ok then
  io.stderr:write(msg, "\n", table.concat(list, "\n"), "\n")
  os.exit(3)
end

-- resolve = true writes the parameters' current values as their defaults.
assert(g:save(output, {resolve = true}))
print("wrote " .. output)
