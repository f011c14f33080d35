-- SIGTERM in the middle of g:run: the run stops at the next node boundary (SaveImage never
-- runs, so no file is written) and the script ends as interrupted.
-- Usage: interrupt.lua INPUT_DIR OUTPUT_DIR. The signal is sent from the progress function
-- once the first node is done.
local sdflow = require "sdflow"
local input_dir, output_dir = assert(arg[1]), assert(arg[2])
local pid = assert(io.open("/proc/self/stat")):read("l"):match("^(%d+)")

local ctx <close> = sdflow.context{input_dir = input_dir, output_dir = output_dir, cache = false}
local g <close> = ctx:graph()
local img = g:add("LoadImage", {image = "shapes.png"}, "load")
g:add("SaveImage", {images = img.IMAGE, filename_prefix = "never"}, "save")
local r, err = g:run{progress = function(ev)
  if ev.kind == "done" and ev.node == "load" then
    os.execute("kill -TERM " .. pid)
  end
end}
-- Not reached: the signal ends the script when run returns.
print("after run", r, err)
