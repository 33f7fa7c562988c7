-- Runs an Argo CD health check the way Argo CD does: the live object in the global `obj`,
-- the script's returned table read for status and message.
-- Usage: lua5.1 harness.lua CHECK.lua OBJECT.lua   (OBJECT.lua returns the object as a table)
-- Prints two lines: the status, then the message.
local check_path, object_path = arg[1], arg[2]
local load_object = assert(loadfile(object_path))
obj = load_object()
local check = assert(loadfile(check_path))
local hs = check()
assert(type(hs) == "table", "the health check must return a table")
io.write(tostring(hs.status), "\n", tostring(hs.message or ""), "\n")
