-- Under `sdflow lua` every way to load a chunk takes source text only: load (from a string and
-- from a reader function), loadfile, dofile and require refuse a precompiled chunk, and still
-- load text as lua5.4 does. Usage: bytecode.lua DIR (a scratch directory). Prints "bytecode: ok".
local dir = assert(arg[1])
local marker = dir .. "/ran"
local source = ("io.open(%q, 'w'):close() return 42"):format(marker)
local chunk = string.dump(assert(load(source)))
local refused = "attempt to load a binary chunk (mode is 't')"
local fails = 0

local function check(what, ok)
  if not ok then
    fails = fails + 1
    print("FAIL: " .. what)
  end
end

local function write(name, data)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
  return dir .. "/" .. name
end

local luac = write("chunk.luac", chunk)
local text = write("text.lua", "return ...")

-- load: a string, a reader function, every mode and an environment.
local fn, msg = load(chunk)
check("load(bytecode): " .. tostring(msg), fn == nil and msg == refused)
fn, msg = load(chunk, "=chunk", "b")
check("load(bytecode, name, 'b'): " .. tostring(msg), fn == nil and msg == "attempt to load a binary chunk (mode is '')")
fn, msg = load(chunk, "=chunk", "bt", {})
check("load(bytecode, name, 'bt', env): " .. tostring(msg), fn == nil and msg == refused)
local pieces = {chunk:sub(1, 3), chunk:sub(4)}
fn, msg = load(function() return table.remove(pieces, 1) end)
check("load(reader of bytecode): " .. tostring(msg), fn == nil and msg == refused)
check("load(text)", load("return 1 + 1")() == 2)
check("load(text, name, 't', env)", load("return x", "=env", "t", {x = 5})() == 5)
check("load(text, name, 'b') refused", load("return 1", "=b", "b") == nil)
pieces = {"return ", "3"}
check("load(reader of text)", load(function() return table.remove(pieces, 1) end)() == 3)

-- loadfile and dofile: the message names the file.
fn, msg = loadfile(luac)
check("loadfile(bytecode): " .. tostring(msg), fn == nil and msg == luac .. ": " .. refused)
fn, msg = loadfile(luac, "bt", {})
check("loadfile(bytecode, 'bt', env): " .. tostring(msg), fn == nil and msg == luac .. ": " .. refused)
check("loadfile(text)", loadfile(text)(7) == 7)
check("loadfile(text, 't', env)", select("#", loadfile(text, "t", {})(1, 2)) == 2)
local ok
ok, msg = pcall(dofile, luac)
check("dofile(bytecode): " .. tostring(msg), not ok and msg == luac .. ": " .. refused)
check("dofile(text)", select("#", dofile(text)) == 0)

-- require through package.path.
write("bcmod.lua", chunk)
write("textmod.lua", "return {name = ...}")
package.path = dir .. "/?.lua"
ok, msg = pcall(require, "bcmod")
check("require(bytecode): " .. tostring(msg), not ok and
  msg == ("error loading module 'bcmod' from file '%s/bcmod.lua': %s"):format(dir, refused))
check("require(text)", require("textmod").name == "textmod")
ok, msg = pcall(require, "nosuchmod")
check("require(missing): " .. tostring(msg), not ok and msg:find("no file '" .. dir .. "/nosuchmod.lua'", 1, true))

check("no bytecode ran", io.open(marker) == nil)
print(fails == 0 and "bytecode: ok" or ("bytecode: " .. fails .. " failed"))
