-- Lua binding overhead per pick (make bench-lua). Runs under lua5.4 (the C
-- module) and luajit (the FFI): a pick through the binding, next to a Lua
-- call with the same arguments that does nothing. Prints ns per call, the
-- best of REPEATS runs of N calls.
local cmr = require "cmr";

local N, REPEATS = 2000000, 7;
local clock = os.clock;

local router = assert(cmr.new("default=roundrobin"));
for i = 1, 4 do assert(router:register("user-0@example.org/node-" .. i, i, 1, "", true)); end
local recipient, kind, sender = "user-0@example.org", "chat", "sensor-17@things.example.net/probe";

local function noop(_, _, _, _, _, _) end

local function best(run)
	local fastest = math.huge;
	for _ = 1, REPEATS do
		local start = clock();
		run();
		fastest = math.min(fastest, clock() - start);
	end
	return fastest / N * 1e9;
end

local empty = best(function ()
	for _ = 1, N do noop(router, recipient, kind, sender, nil, false); end
end);
local picks = best(function ()
	for _ = 1, N do router:pick(recipient, kind, sender, nil, false); end
end);
print(("%s: empty Lua call %.1f ns, router:pick %.1f ns (library's own pick: see BENCHMARKS.md)")
	:format(cmr.backend, empty, picks));
