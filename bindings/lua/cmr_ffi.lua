-- The LuaJIT backend of the Lua binding: the same API as cmr_core.c, over
-- LuaJIT's FFI. The declarations come from cmr_cdef.lua, generated at build
-- time from include/cmr_cdef.h (itself generated from the Rust source).
local ffi = require "ffi";

ffi.cdef(require "cmr_cdef");

-- libcmr.so.0 lies beside this file in the build and install layouts.
local here = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./");
local lib = ffi.load(here .. "libcmr.so.0");

local OK, NOT_ROUTED, NOT_MINE, TOO_SMALL = 0, 1, 2, 3;

-- Lua states are single-threaded: one set of scratch buffers serves all calls.
local message = ffi.new("cmr_message");
local tokens_cap = 16;
local tokens = ffi.new("uint64_t[?]", tokens_cap);
local out_len = ffi.new("size_t[1]");
local flag = ffi.new("bool[1]");
local text_cap = 1024;
local text = ffi.new("char[?]", text_cap);

-- nil, message, status: the Lua way of reporting an error.
local function failure(status)
	status = tonumber(status);
	local got = lib.cmr_last_error(nil, 0, out_len);
	local message;
	if got == TOO_SMALL then
		local size = tonumber(out_len[0]);
		local buf = ffi.new("char[?]", size);
		if lib.cmr_last_error(buf, size, out_len) == OK then message = ffi.string(buf, out_len[0]); end
	end
	-- The status as a word a host can test (`panic`: the router is unusable).
	return nil, message or ffi.string(lib.cmr_status_message(status)), ffi.string(lib.cmr_status_name(status));
end

local function result(status)
	if status ~= OK then return failure(status); end
	return true;
end

-- Calls `call(buf, cap)`; when the buffer was too small, grows it and calls
-- again. Returns the status, and the text when it is OK.
local function with_text(call)
	local status = call(text, text_cap);
	if status == TOO_SMALL then
		text_cap = tonumber(out_len[0]);
		text = ffi.new("char[?]", text_cap);
		status = call(text, text_cap);
	end
	if status == OK then return status, ffi.string(text, out_len[0]); end
	return status;
end

local function text_result(call)
	local status, value = with_text(call);
	if status ~= OK then return failure(status); end
	return value;
end

local router_mt = {};
router_mt.__index = router_mt;

local function ptr(self)
	if self.router == nil then error("cmr: router already freed"); end
	return self.router;
end

function router_mt:register(jid, token, priority, show, available)
	show = show or "";
	priority = math.max(-2147483648, math.min(2147483647, priority));
	local status = lib.cmr_router_register(ptr(self), jid, #jid, token, priority, show, #show, not not available,
		flag);
	if status ~= OK then return failure(status); end
	return true, flag[0];
end

function router_mt:set_hibernating(jid, token, hibernating)
	return result(lib.cmr_router_set_hibernating(ptr(self), jid, #jid, token, not not hibernating));
end

function router_mt:unregister(jid, token)
	return result(lib.cmr_router_unregister(ptr(self), jid, #jid, token));
end

function router_mt:session_gone(jid, token)
	return result(lib.cmr_router_session_gone(ptr(self), jid, #jid, token));
end

function router_mt:touch(jid, token)
	return result(lib.cmr_router_touch(ptr(self), jid, #jid, token));
end

function router_mt:set_load(jid, token, load)
	-- Any number: NaN and what is not positive count as 0.
	load = load > 0 and math.floor(math.min(4294967295, load)) or 0;
	return result(lib.cmr_router_set_load(ptr(self), jid, #jid, token, load));
end

-- Tokens come back as Lua numbers: exact up to 2^53, which the host's
-- counters stay far below.
local function unpack_tokens(i, n)
	if i >= n then return; end
	return tonumber(tokens[i]), unpack_tokens(i + 1, n);
end

function router_mt:pick(recipient, message_type, sender, hint, sender_is_local)
	message_type, sender, hint = message_type or "", sender or "", hint or "";
	message.recipient, message.recipient_len = recipient, #recipient;
	message.message_type, message.message_type_len = message_type, #message_type;
	message.sender, message.sender_len = sender, #sender;
	message.hint, message.hint_len = hint, #hint;
	message.sender_is_local = not not sender_is_local;
	local status = lib.cmr_router_pick(ptr(self), message, tokens, tokens_cap, out_len);
	if status == TOO_SMALL then
		tokens_cap = tonumber(out_len[0]);
		tokens = ffi.new("uint64_t[?]", tokens_cap);
		status = lib.cmr_router_pick(ptr(self), message, tokens, tokens_cap, out_len);
	end
	if status == NOT_ROUTED then return 0; end
	if status ~= OK then return failure(status); end
	local n = tonumber(out_len[0]);
	if n == 1 then return 1, tonumber(tokens[0]); end
	return n, unpack_tokens(0, n);
end

function router_mt:get_algorithm(jid)
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_get_algorithm(router, jid, #jid, buf, cap, out_len);
	end);
end

function router_mt:set_algorithm(jid, algorithm)
	return result(lib.cmr_router_set_algorithm(ptr(self), jid, #jid, algorithm, #algorithm));
end

function router_mt:handle_iq(xml)
	local router = ptr(self);
	local status, reply = with_text(function (buf, cap)
		return lib.cmr_router_handle_iq(router, xml, #xml, buf, cap, out_len, flag);
	end);
	if status == NOT_MINE then return false; end
	if status ~= OK then return failure(status); end
	return reply, flag[0];
end

function router_mt:disco_features()
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_disco_features(router, buf, cap, out_len);
	end);
end

function router_mt:stats(jid)
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_stats(router, jid, #jid, buf, cap, out_len);
	end);
end

-- The algorithms' short names, by their index in cmr_metrics' arrays.
local algorithms = {};
while true do
	local name = lib.cmr_algorithm_name(#algorithms);
	if name == nil then break; end
	algorithms[#algorithms + 1] = ffi.string(name);
end

-- Counts come back as Lua numbers: exact up to 2^53.
local function per_algorithm(values)
	local counts = {};
	for i, name in ipairs(algorithms) do counts[name] = tonumber(values[i - 1]); end
	return counts;
end

local metrics = ffi.new("cmr_metrics");
function router_mt:metrics()
	local status = lib.cmr_router_metrics(ptr(self), metrics);
	if status ~= OK then return failure(status); end
	return {
		routed = per_algorithm(metrics.routed);
		left_to_server = per_algorithm(metrics.left_to_server);
		left_to_server_unclaimed = tonumber(metrics.left_to_server_unclaimed);
		gone_sessions = tonumber(metrics.gone_sessions);
		iq_results = tonumber(metrics.iq_results);
		iq_errors = tonumber(metrics.iq_errors);
		sessions = tonumber(metrics.sessions);
		accounts = tonumber(metrics.accounts);
	};
end

local function new(options)
	options = options or "";
	local out = ffi.new("cmr_router*[1]");
	local status = lib.cmr_router_new(options, #options, out);
	if status ~= OK then return failure(status); end
	return setmetatable({ router = ffi.gc(out[0], lib.cmr_router_free) }, router_mt);
end

return {
	new = new;
	version = function () return ffi.string(lib.cmr_version()); end;
	backend = "luajit-ffi";
};
