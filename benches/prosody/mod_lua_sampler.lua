-- mod_lua_sampler: a Lua-level profile of a Prosody under a benchmark
-- (benches/callgrind_prosody.py --profile); never part of mod_cmr.
--
-- A count hook runs every `lua_sampler_period` Lua VM instructions and
-- charges that many to the running line (self) and once to every function
-- on the stack (inclusive). C functions run no VM instructions: what they
-- cost is callgrind's to count. At shutdown the profile is written to
-- `lua_sampler_file`.

-- One sampler for the process, whatever the virtual hosts.
module:set_global();

local period = module:get_option_number("lua_sampler_period", 101);
local out_file = module:get_option_string("lua_sampler_file");

local getinfo, sethook = debug.getinfo, debug.sethook;
local self_lines, self_functions, inclusive = {}, {}, {};
local total = 0;

local function name_of(info)
	return ("%s:%d"):format(info.short_src, info.linedefined);
end

local seen = {};
local function sample()
	total = total + 1;
	local info = getinfo(2, "Sl");
	if not info then return; end
	local line = ("%s:%d"):format(info.short_src, info.currentline);
	self_lines[line] = (self_lines[line] or 0) + 1;
	local fn = name_of(info);
	self_functions[fn] = (self_functions[fn] or 0) + 1;
	local level = 2;
	while info do
		fn = name_of(info);
		if not seen[fn] then
			seen[fn] = true;
			inclusive[fn] = (inclusive[fn] or 0) + 1;
		end
		level = level + 1;
		info = getinfo(level, "S");
	end
	for k in pairs(seen) do seen[k] = nil; end
end

-- The main thread (registry[1] in Lua 5.4) runs the network loop; each
-- session's coroutine (util.async) takes the hook of the thread that makes
-- it, which is that one.
sethook(debug.getregistry()[1], sample, "", period);

-- The `top` largest entries of `counts`, with their share of all samples.
local function top(counts, n)
	local keys = {};
	for k in pairs(counts) do keys[#keys + 1] = k; end
	table.sort(keys, function (a, b) return counts[a] > counts[b]; end);
	local lines = {};
	for i = 1, math.min(n, #keys) do
		lines[i] = ("%6.2f%%  %s"):format(100 * counts[keys[i]] / total, keys[i]);
	end
	return table.concat(lines, "\n");
end

module:hook_global("server-stopping", function ()
	if not out_file then return; end
	local f = assert(io.open(out_file, "w"));
	f:write(("%d samples, one per %d Lua VM instructions\n"):format(total, period));
	f:write("\n-- self, by line\n", top(self_lines, 30), "\n");
	f:write("\n-- self, by function (source:line where it is defined)\n", top(self_functions, 30), "\n");
	f:write("\n-- inclusive, by function\n", top(inclusive, 40), "\n");
	f:close();
end);
