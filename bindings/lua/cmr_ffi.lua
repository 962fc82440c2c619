-- The LuaJIT backend of the Lua binding: the same API as cmr_core.c, over
-- LuaJIT's FFI. The declarations come from cmr_cdef.lua, generated at build
-- time from include/cmr_cdef.h (itself generated from the Rust source).
local ffi = require "ffi";

ffi.cdef(require "cmr_cdef");

-- libcmr.so.0 lies beside this file in the build and install layouts.
local here = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./");
local lib = ffi.load(here .. "libcmr.so.0");

-- The statuses by the cdef's names (enum constants resolve on any clib).
local OK, TOO_SMALL, NOT_ROUTED = lib.CMR_STATUS_OK, lib.CMR_STATUS_BUFFER_TOO_SMALL, lib.CMR_STATUS_NOT_ROUTED;

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

-- The pick's status; the tokens in `tokens`, out_len[0] of them.
local function pick_tokens(self, recipient, message_type, sender, hint, sender_is_local)
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
	return status;
end

function router_mt:pick(...)
	local status = pick_tokens(self, ...);
	if status == NOT_ROUTED then return 0; end
	if status ~= OK then return failure(status); end
	local n = tonumber(out_len[0]);
	if n == 1 then return 1, tonumber(tokens[0]); end
	return n, unpack_tokens(0, n);
end

function router_mt:picker(into)
	ptr(self);
	assert(type(into) == "table", "cmr: picker takes a table");
	return function (recipient, message_type, sender, hint, sender_is_local)
		local status = pick_tokens(self, recipient, message_type, sender, hint, sender_is_local);
		if status == NOT_ROUTED then return 0; end
		if status ~= OK then return failure(status); end
		local n = tonumber(out_len[0]);
		for i = 1, n do into[i] = tonumber(tokens[i - 1]); end
		return n;
	end;
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
	if status == lib.CMR_STATUS_NOT_MINE then return false; end
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

local stages = {
	[tonumber(lib.CMR_COMMAND_STAGE_FORM)] = "form";
	[tonumber(lib.CMR_COMMAND_STAGE_COMPLETED)] = "completed";
	[tonumber(lib.CMR_COMMAND_STAGE_REFUSED)] = "refused";
};
local stage = ffi.new("cmr_command_stage[1]");

function router_mt:routing_command(requester, submitted)
	local router = ptr(self);
	submitted = submitted or "";
	local status, answer = with_text(function (buf, cap)
		return lib.cmr_router_routing_command(router, requester, #requester, submitted, #submitted, buf, cap,
			out_len, stage, flag);
	end);
	if status ~= OK then return failure(status); end
	return stages[tonumber(stage[0])], answer, flag[0];
end

function router_mt:admin_form()
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_admin_form(router, buf, cap, out_len);
	end);
end

function router_mt:choose_for(jid, algorithm)
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_choose_for(router, jid, #jid, algorithm, #algorithm, buf, cap, out_len);
	end);
end

function router_mt:choice_note(jid, algorithm)
	local router = ptr(self);
	return text_result(function (buf, cap)
		return lib.cmr_router_choice_note(router, jid, #jid, algorithm, #algorithm, buf, cap, out_len);
	end);
end

function router_mt:algorithm_for(jid, stored)
	local router = ptr(self);
	stored = stored or "";
	return text_result(function (buf, cap)
		return lib.cmr_router_algorithm_for(router, jid, #jid, stored, #stored, buf, cap, out_len);
	end);
end

local function admin_form_value(submitted, var)
	return text_result(function (buf, cap)
		return lib.cmr_admin_form_value(submitted, #submitted, var, #var, buf, cap, out_len);
	end);
end

local function command(info)
	return { node = ffi.string(info.node), name = ffi.string(info.name) };
end

-- The library's table of metric series, as a list of tables.
local series_fields = { "key", "metric", "family", "unit", "label", "label_value", "help" };
local function metric_series()
	local list = {};
	while true do
		local series = lib.cmr_metric_series_at(#list);
		if series == nil then return list; end
		local entry = { kind = series.kind == lib.CMR_METRIC_KIND_GAUGE and "gauge" or "counter" };
		for _, field in ipairs(series_fields) do entry[field] = ffi.string(series[field]); end
		list[#list + 1] = entry;
	end
end

-- The values, in the order of metric_series(): Lua numbers, exact up to
-- 2^53, which the counts stay far below.
local values_cap = 32;
local values = ffi.new("uint64_t[?]", values_cap);
function router_mt:metric_values()
	local status = lib.cmr_router_metric_values(ptr(self), values, values_cap, out_len);
	if status == TOO_SMALL then
		values_cap = tonumber(out_len[0]);
		values = ffi.new("uint64_t[?]", values_cap);
		status = lib.cmr_router_metric_values(ptr(self), values, values_cap, out_len);
	end
	if status ~= OK then return failure(status); end
	local list = {};
	for i = 1, tonumber(out_len[0]) do list[i] = tonumber(values[i - 1]); end
	return list;
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
	metric_series = metric_series;
	admin_form_value = admin_form_value;
	routing_command = command(lib.cmr_routing_command());
	admin_command = command(lib.cmr_admin_command());
	max_picks_per_message = tonumber(lib.cmr_max_picks_per_message());
	activity_interval_ms = tonumber(lib.cmr_activity_interval_ms());
	backend = "luajit-ffi";
};
