-- SIGTERM in the middle of g:run: the run stops at the next node boundary (SaveImage never
-- runs, so no file is written) and the script ends as interrupted.
-- Usage: interrupt.lua INPUT_DIR OUTPUT_DIR [pcall]. The signal is sent from the progress
-- function once the first node is done. With "pcall", g:run is called in a loop of pcalls,
-- which must not catch the interrupt: the script ends after the first run all the same.
local sdflow = require "sdflow"
local input_dir, output_dir = assert(arg[1]), assert(arg[2])
local pid = assert(io.open("/proc/self/stat")):read("l"):match("^(%d+)")

local ctx <close> = sdflow.context{input_dir = input_dir, output_dir = output_dir, cache = false}
local g <close> = ctx:graph()
local img = g:add("LoadImage", {image = "shapes.png"}, "load")
g:add("SaveImage", {images = img.IMAGE, filename_prefix = "never"}, "save")
local function run()
  return g:run{progress = function(ev)
    if ev.kind == "done" and ev.node == "load" then
      os.execute("kill -TERM " .. pid)
    end
  end}
end
if arg[3] == "pcall" then
  while true do
    print("pcall", pcall(run))
  end
end
local r, err = run()
-- Not reached: the signal ends the script when run returns.
print("after run", r, err)
