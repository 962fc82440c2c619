-- The Lua of one message to a bare JID, mod_cmr's against mod_message's,
-- outside a server: both modules are loaded from their files into a stand-in
-- of Prosody's module API, over Prosody's own util.events, util.stanza and
-- util.filters, and each message is fired as the stanza router fires it
-- (`pre-message/bare`, then `message/bare`) to sessions whose `send` runs
-- their `stanzas/out` filters and writes nothing. What is left out costs
-- both the same: parsing, the router, serializing and writing.
--
--   lua5.4 handler_bench.lua SOURCEDIR MODDIR native|cmr SESSIONS MESSAGES
--
-- SOURCEDIR is Prosody's (/usr/lib/prosody; 0.12's elsewhere), MODDIR
-- mod_cmr's built folder (build/prosody/mod_cmr). Run it under
-- `valgrind --tool=callgrind` with two values of MESSAGES: the difference
-- of the totals over the difference of MESSAGES is one message's cost
-- (`benches/callgrind_prosody.py --handler` does that).
local source, moddir, which, sessions, messages = ...;
sessions, messages = tonumber(sessions), tonumber(messages);

package.path = source .. "/?.lua;" .. package.path;
package.cpath = source .. "/?.so;" .. package.cpath;
-- 13 names its libraries prosody.util.*; its loader maps them to util.*.
local loader = io.open(source .. "/loader.lua");
if loader then
	loader:close();
	dofile(source .. "/loader.lua");
end

local fake_usermanager = { user_exists = function () return true; end };
package.loaded["core.usermanager"] = fake_usermanager;
package.loaded["core.modulemanager"] = { is_loaded = function () return false; end };

local events = require "util.events".new();
local st = require "util.stanza";
local filters = require "util.filters";

local HOST = "localhost";
local full_sessions, bare_sessions = {}, {};
local host_sessions = {};
_G.prosody = {
	full_sessions = full_sessions, bare_sessions = bare_sessions,
	hosts = { [HOST] = { sessions = host_sessions, events = events } },
	events = require "util.events".new(),
};

local shared = {};
local function module_api(name, directory, options)
	local api = { host = HOST, name = name };
	function api:get_directory() return directory; end
	function api:get_option(key) return options[key]; end
	api.get_option_string, api.get_option_boolean, api.get_option_array = api.get_option, api.get_option,
		api.get_option;
	function api:open_store() return { get = function () end, set = function () return true; end }; end
	function api:shared(path)
		shared[path] = shared[path] or {};
		return shared[path];
	end
	function api:log() end
	function api:hook(event, handler, priority) events.add_handler(event, handler, priority); end
	function api:hook_global() end
	function api:wrap_event(event, wrapper) events.add_wrapper(event, wrapper); end
	function api:fire_event(...) return events.fire_event(...); end
	function api:add_timer() end
	function api:add_feature() end
	function api:depends() end
	function api:require() return { new = function () return {}; end }; end
	function api:provides() end
	function api:metric()
		return { with_labels = function () return { set = function () end }; end };
	end
	return api;
end

local function load_module(path, name, directory, options)
	local env = setmetatable({ module = module_api(name, directory, options), prosody = _G.prosody },
		{ __index = _G });
	assert(loadfile(path, "t", env))();
end

-- The account's receivers and another account's sender, bound and
-- available at priority 0.
local written = 0;
local function new_session(username, resource)
	local session = { type = "c2s", username = username, host = HOST, resource = resource, priority = 0,
		full_jid = username .. "@" .. HOST .. "/" .. resource, presence = st.presence() };
	filters.initialize(session);
	function session.send(stanza)
		stanza = session.filter("stanzas/out", stanza);
		if stanza then written = written + 1; end
		return true;
	end
	local bare = username .. "@" .. HOST;
	local user = bare_sessions[bare] or { sessions = {}, top_resources = {} };
	bare_sessions[bare], host_sessions[username] = user, user;
	user.sessions[resource] = session;
	user.top_resources[#user.top_resources + 1] = session;
	full_sessions[session.full_jid] = session;
	events.fire_event("resource-bind", { session = session });
	return session;
end

-- mod_message is loaded either way, as on a server; mod_cmr's handler
-- comes first and stops the event.
load_module(source .. "/modules/mod_message.lua", "message", source .. "/modules", {});
if which == "cmr" then load_module(moddir .. "/mod_cmr.lua", "cmr", moddir, { cmr_hints = "any" }); end

for i = 1, sessions do new_session("user0", "node-" .. i); end
local sender = new_session("user1", "probe");
local stanza = st.message({ to = "user0@" .. HOST, type = "chat", from = sender.full_jid }):text_tag("body", "m");

for _ = 1, messages do
	local event = { origin = sender, stanza = stanza };
	if not events.fire_event("pre-message/bare", event) then events.fire_event("message/bare", event); end
end
assert(written == sessions * messages, ("%d written, %d expected"):format(written, sessions * messages));
