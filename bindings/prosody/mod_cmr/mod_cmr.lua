-- mod_cmr: XEP-0354 Customizable Message Routing for Prosody 0.12 and 13.
--
-- The routing decisions live in the cmr library; this module feeds it the
-- sessions' presence, activity and XEP-0198 load, asks it who gets each
-- message sent to a bare JID (or to an offline full JID), delivers to
-- those sessions with `to` untouched, answers XEP-0354 IQs through it, and
-- serves its figures as Prosody's metrics. See README.md beside this file.
--
-- After the setup, one section per concern: hooks (sessions, routing,
-- IQs), XEP-0198 marking, carbons, metrics, ad-hoc commands and the
-- operators' choice, the admin shell.

local st = require "util.stanza";
local jid_bare = require "util.jid".bare;
local jid_host = require "util.jid".host;
local jid_prepped_split = require "util.jid".prepped_split;
local usermanager = require "core.usermanager";
local xml_parse = require "util.xml".parse;
local time_now = require "util.time".now;
local filters = require "util.filters";
local modulemanager = require "core.modulemanager";

local full_sessions = prosody.full_sessions;
local bare_sessions = prosody.bare_sessions;

local xmlns_cmr = "urn:xmpp:cmr:0";
local xmlns_carbons = "urn:xmpp:carbons:2";
local xmlns_forward = "urn:xmpp:forward:0";
local xmlns_sm3 = "urn:xmpp:sm:3";

-- The binding (cmr.lua and its backend) lies beside this file.
local function load_binding()
	local dir = module:get_directory();
	local path, cpath = package.path, package.cpath;
	package.path = dir .. "/?.lua;" .. path;
	package.cpath = dir .. "/?.so;" .. cpath;
	local ok, binding = pcall(require, "cmr");
	package.path, package.cpath = path, cpath;
	if not ok then error("mod_cmr: cannot load the cmr library from " .. dir .. ": " .. tostring(binding)); end
	return binding;
end
local cmr = load_binding();

-- Options, read with Prosody's typed getters and passed to the library:
-- it validates them (which algorithms and hint policies exist is its to
-- know) and names the option and the value it rejects. What a getter
-- would quietly change (a list cut to its first item, a boolean it cannot
-- read, which it makes nil) stops the load here, naming the option.
local serialize = require "util.serialization".serialize;
local function typed_option(name, get, accepted_types, expected)
	local given = module:get_option(name);
	local value = get(module, name);
	if given ~= nil and (not accepted_types[type(given)] or value == nil) then
		error(("mod_cmr: option %s = %s: expected %s"):format(name, serialize(given, "oneline"), expected));
	end
	return value;
end
local text = { string = true };
local offered = typed_option("cmr_offered", module.get_option_array, { table = true, string = true },
	"a list of algorithms");
local user_change = typed_option("cmr_user_change", module.get_option_boolean, { boolean = true, string = true },
	"true or false");
local options = {};
for key, value in pairs {
	-- tostring: the library names an item that is no algorithm.
	offered = offered and table.concat(offered:map(tostring), ",");
	default = typed_option("cmr_default", module.get_option_string, text, "one algorithm");
	user_change = user_change ~= nil and tostring(user_change) or nil;
	hints = typed_option("cmr_hints", module.get_option_string, text, "one value");
	prefix = typed_option("cmr_prefix", module.get_option_string, text, "one URI prefix");
} do
	if value:find("%s") then
		error(("mod_cmr: option cmr_%s = %q: values contain no spaces"):format(key, value));
	end
	options[#options + 1] = key .. "=" .. value;
end
local router, err = cmr.new(table.concat(options, " "));
if not router then
	module:log("error", "Refusing to load: %s", err);
	error("mod_cmr: " .. err);
end
module:log("info", "cmr %s (%s backend) routing for %s", cmr.version(), cmr.backend, module.host);

local store = module:open_store("cmr");

-- Each host's router and operators' calls, for the admin shell
-- (module.unload removes this one's).
local operated = module:shared("/*/cmr/hosts");

-- A call the library refused. "panic" means it caught a bug and refuses
-- every call from now on: said once, at error level, and Prosody routes
-- messages itself (every caller falls back on an error). Other refusals
-- are logged at `level`.
local failed_logged = false;
local function refused(status, message, level, ...)
	if status == "panic" then
		if not failed_logged then
			failed_logged = true;
			module:log("error", "cmr failed; Prosody routes messages itself until mod_cmr is reloaded: %s", message);
		end
	else
		module:log(level, ...);
	end
end

-- Sessions by token. Tokens count up for the router's lifetime.
local session_of = {};
local last_token = 0;

-- The attribute that marks a message in a session's XEP-0198 queue as
-- delivered to that session alone (see XEP-0198 marking).
local ROUTED_ALONE = "urn:x-cmr:delivery\1alone";

-- Defined in the carbons section.
local carbons_loaded, send_carbons, copied_elsewhere;
-- Defined in the XEP-0198 marking section.
local unmarked_on;

--------------------------------------------------------------------------
-- Hooks: sessions, routing and IQs
--------------------------------------------------------------------------

local valid_show = { chat = "chat", away = "away", xa = "xa", dnd = "dnd" };

-- The account's persisted algorithm, applied when its first session binds.
local function restore(session)
	local data = store:get(session.username);
	if data and data.algorithm then
		local ok, err, status = router:set_algorithm(jid_bare(session.full_jid), data.algorithm);
		if not ok then refused(status, err, "warn", "Stored algorithm of %s not restored: %s", session.username, err); end
	end
end

-- What router:register answered: true, new_account | nil, err, status.
local function registered(session, token, ok, ...)
	if not ok then
		local err, status = ...;
		return refused(status, err, "warn", "Not routing to %s: %s", session.full_jid, err);
	end
	local new_account = ...;
	-- Only at a module load can a session already hibernate here.
	if session.hibernating then router:set_hibernating(session.full_jid, token, true); end
	if new_account then restore(session); end
end

local function register(session)
	-- A destroyed session's unavailable presence comes after its unbind
	-- (mod_presence sends it from resource-unbind): nothing to register.
	if not session.full_jid or session.destroyed then return; end
	local token = session.cmr_token;
	if not token or session_of[token] ~= session then
		last_token = last_token + 1;
		token = last_token;
		session.cmr_token, session_of[token] = token, session;
	end
	local presence = session.presence;
	-- A <show/> outside RFC 6121's four is no show at all, as Prosody
	-- treats it.
	local show = presence and valid_show[presence:get_child_text("show")] or "";
	return registered(session, token,
		router:register(session.full_jid, token, session.priority or 0, show, presence ~= nil));
end

-- `gone`: a pick chose the session and found it gone (the library counts
-- that too).
local function unregister(session, gone)
	local token = session.cmr_token;
	if token and session_of[token] == session then
		session_of[token] = nil;
		if gone then
			router:session_gone(session.full_jid, token);
		else
			router:unregister(session.full_jid, token);
		end
	end
end

module:hook("resource-bind", function (event) register(event.session); end);

module:hook("resource-unbind", function (event) unregister(event.session); end);

-- mod_presence updates a session's priority and show while handling its
-- presence; register after it has run.
module:wrap_event("presence/bare", function (handlers, event_name, event_data)
	local ret = handlers(event_name, event_data);
	local origin = event_data.origin;
	if origin.type == "c2s" and not event_data.stanza.attr.to then register(origin); end
	return ret;
end);

-- A hibernating XEP-0198 session (mod_smacks keeps session.hibernating)
-- gets messages only when no other session can, and keeps them for its
-- resumption. On resumption, `resumed` is the session that goes on (the
-- new connection's session was never bound).
local function set_hibernating(session, hibernating)
	local token = session.cmr_token;
	if token and session_of[token] == session then
		router:set_hibernating(session.full_jid, token, hibernating);
	end
end
module:hook("smacks-hibernation-start", function (event) set_hibernating(event.origin, true); end);
module:hook("smacks-hibernation-end", function (event) set_hibernating(event.resumed, false); end);

-- Activity for `mostactive`, at most once per the library's interval per
-- session. The clock counts intervals and a timer keeps it, so that this
-- hook, which runs for every stanza a user sends, costs a comparison.
local activity_interval = cmr.activity_interval_ms / 1000;
local function current_interval() return math.floor(time_now() / activity_interval); end
local interval = current_interval();
module:add_timer(activity_interval, function ()
	interval = current_interval();
	return activity_interval;
end);
local function touch(event)
	local session = event.origin;
	if session.cmr_touched ~= interval and session.cmr_token then
		session.cmr_touched = interval;
		router:touch(session.full_jid, session.cmr_token);
	end
end
for _, kind in ipairs { "bare", "full", "host" } do
	module:hook("pre-message/" .. kind, touch, 1000);
	module:hook("pre-iq/" .. kind, touch, 1000);
end

-- Load for `leastloaded`: the session's unacknowledged XEP-0198 queue.
local function report_load(session, unacked)
	if session.cmr_token then router:set_load(session.full_jid, session.cmr_token, unacked); end
end
module:hook("stanza/" .. xmlns_sm3 .. ":a", function (event)
	-- Runs before mod_smacks consumes the ack: what stays unacked is what
	-- was sent beyond the client's h.
	-- h comes from the client: only a count is one (checked without
	-- math.tointeger, which LuaJIT lacks).
	local session, h = event.origin, tonumber(event.stanza.attr.h);
	local queue = session.outgoing_stanza_queue;
	if queue and h and h >= 0 and h < 2^32 and h % 1 == 0 then
		report_load(session, math.max(0, queue:count_unacked() - (h - queue:count_acked())));
	end
end, 1);

-- The sessions that took the message, for the carbons: kept only where
-- carbons exist. One set, reused: routing runs to completion before the
-- next message, and a table per message would only feed the GC.
local picked = {};

-- A picked session that turned out to be gone: unregistered and counted.
local function gone(session)
	module:log("debug", "Picked session %s is gone; routing again", session.full_jid);
	unregister(session, true);
end

-- Sends the stanza to a picked session: true when it took it. `mark` (a
-- session alone gets it) goes on the copy a session's XEP-0198 queue keeps.
local function send_to(stanza, session, mark)
	if not session.destroyed then
		local attr = stanza.attr;
		if mark then
			unmarked_on(session);
			attr[ROUTED_ALONE] = mark;
		end
		local sent = session.send(stanza);
		if mark then attr[ROUTED_ALONE] = nil; end
		if sent then
			if carbons_loaded then picked[session] = true; end
			local queue = session.outgoing_stanza_queue;
			if queue then report_load(session, queue:count_unacked()); end
			return true;
		end
	end
	gone(session);
	return false;
end

-- The tokens of the last pick, in [1..n]: one table, reused.
local tokens = {};

-- The mark of a session picked alone, when it has XEP-0198: `private`
-- when the message was <private/>, else `plain` unless a carbon of it goes
-- elsewhere.
local function mark_for(stanza, bare, session, origin, private)
	return session.smacks and (private and "private"
		or not (carbons_loaded and copied_elsewhere(stanza, bare, session, origin)) and "plain") or nil;
end

-- Whether this host honours message hints at all (set below from the
-- library's disco features): when not, messages are not searched for one.
local honour_hints = false;

-- A picked session can vanish between the pick and the delivery; each
-- pick after one removes at least one, so the library's limit settles.
local max_picks = cmr.max_picks_per_message;

-- The pick, into `tokens`: routing runs for every message to an account.
local pick = router:picker(tokens);

-- Routes a message for `bare` (by default the stanza's bare recipient: it
-- is the `message/bare` handler); which messages CMR routes is the
-- library's rule. Returns true when delivered; nil lets Prosody handle it
-- (a type CMR leaves to the server, or nothing eligible: offline storage
-- or error). It runs for every message to an account, so the common case
-- (no hint, one session picked, no XEP-0198, no carbons) takes the fewest
-- steps.
local function route(event, bare)
	local origin, stanza = event.origin, event.stanza;
	local attr = stanza.attr;
	local sender = attr.from;
	bare = bare or attr.to or jid_bare(sender);
	-- The algorithm a <cmr/> hint names: get_child's walk without its
	-- generality.
	local hint, sender_is_local;
	if honour_hints then
		local tags = stanza.tags;
		for i = 1, #tags do
			local tag = tags[i];
			if tag.name == "cmr" and tag.attr.xmlns == xmlns_cmr then
				hint = tag.attr.algorithm;
				-- Whether the sender is a user of this server matters for a hint only.
				sender_is_local = origin.type == "c2s" or prosody.hosts[jid_host(sender) or ""] ~= nil;
				break;
			end
		end
	end
	-- What mod_carbons does with the messages it sees delivered: a private
	-- one is not copied, and its <private/> is removed. Put back if the
	-- message goes on to Prosody, where mod_carbons does it.
	local private;
	if carbons_loaded then
		private = stanza:get_child("private", xmlns_carbons);
		if private then stanza:remove_children("private", xmlns_carbons); end
	end
	for _ = 1, max_picks do
		local n, err, status = pick(bare, attr.type, sender, hint, sender_is_local);
		if not n then
			refused(status, err, "warn", "Not routing %s: %s", stanza:top_tag(), err);
			break;
		end
		if n == 0 then break; end
		local lone = n == 1 and session_of[tokens[1]];
		if lone and not (lone.smacks or carbons_loaded) then
			-- The common case, taken out of the loop below.
			if not lone.destroyed and lone.send(stanza) then return true; end
			gone(lone);
		else
			local sent;
			for i = 1, n do
				local session = session_of[tokens[i]];
				if session and not (session.smacks or carbons_loaded) then
					-- Nothing to mark, no carbons: send_to's common case.
					if not session.destroyed and session.send(stanza) then sent = true; else gone(session); end
				elseif session then
					sent = send_to(stanza, session, n == 1 and mark_for(stanza, bare, session, origin, private)) or sent;
				end
			end
			if sent then
				if carbons_loaded then
					if not private then send_carbons(stanza, bare, picked, origin); end
					for session in pairs(picked) do picked[session] = nil; end
				end
				return true;
			end
		end
	end
	if private then stanza:add_direct_child(private); end
end

-- After MAM (0), before mod_carbons (-0.5) and mod_message (-1): this
-- handler owns the carbons of what it routes.
local PRIORITY = -0.25;

module:hook("message/bare", route, PRIORITY);

-- A message to a full JID that is not online is handled as if sent to the
-- bare JID (RFC 6121 8.5.3.2.1).
module:hook("message/full", function (event)
	local to = event.stanza.attr.to;
	if full_sessions[to] then return; end
	return route(event, jid_bare(to));
end, PRIORITY);

-- XEP-0354 IQs: the library answers; the host sends and persists.
local function refuse_iq(stanza, err, status)
	-- A client's malformed IQ: answered, and not worth a warning each.
	refused(status, err, "debug", "Cannot answer %s: %s", stanza:top_tag(), err);
	if status == "panic" then
		module:send(st.error_reply(stanza, "wait", "internal-server-error"));
	else
		module:send(st.error_reply(stanza, "modify", "bad-request", err));
	end
end

-- Stores the account's algorithm after its user changed it (an IQ or the
-- routing command): restored when its first session binds.
local function persist_choice(bare)
	local algorithm, err, status = router:get_algorithm(bare);
	if algorithm then
		store:set(bare:match("^([^@]+)@"), { algorithm = algorithm });
	else
		refused(status, err, "warn", "Choice of %s not stored: %s", bare, err);
	end
end

local function answer_iq(stanza, reply, changed)
	module:send(xml_parse(reply));
	if changed then persist_choice(jid_bare(stanza.attr.from)); end
end

-- What router:handle_iq answered: reply, changed | false (not a CMR IQ) |
-- nil, err, status.
local function answered(stanza, reply, ...)
	if reply == false then return; end
	if reply == nil then refuse_iq(stanza, ...); else answer_iq(stanza, reply, ...); end
	return true;
end
local function handle_iq(event)
	return answered(event.stanza, router:handle_iq(tostring(event.stanza)));
end
for _, kind in ipairs { "self", "bare", "host" } do
	module:hook("iq-get/" .. kind .. "/" .. xmlns_cmr .. ":query", handle_iq);
	module:hook("iq-set/" .. kind .. "/" .. xmlns_cmr .. ":cmr", handle_iq);
end

-- Disco features, on the server and on accounts.
local features = {};
for feature in assert(router:disco_features()):gmatch("[^\n]+") do
	features[#features + 1] = feature;
	module:add_feature(feature);
	if feature == "urn:xmpp:cmr:hints:0" then honour_hints = true; end
end
module:hook("account-disco-info", function (event)
	for _, feature in ipairs(features) do event.reply:tag("feature", { var = feature }):up(); end
end);

--------------------------------------------------------------------------
-- XEP-0198 marking
--------------------------------------------------------------------------

-- A message delivered to one session alone, with no carbon of it anywhere,
-- is marked in that session's XEP-0198 queue (mod_smacks queues a copy of
-- what it sends): if the session dies without acknowledging it, the mark
-- says no other session holds it, so it is CMR's to route again. The mark
-- is an attribute while the message is sent, taken off what is written to
-- the client by a filter (also for resent and stored copies); its value
-- says whether the message was <private/>.
--
-- The filter goes only where a mark can be written: on a session before
-- its first marked message, and on the connection a session resumes on
-- (its queue is resent through that connection's filters, which the
-- session takes over). Elsewhere what a session sends passes no filter of
-- mod_cmr's: a filter on every session cost about as much per copy as the
-- pick. Unloaded, mod_cmr takes the marks off every queue (below), since
-- nothing would filter a resumption's connection any more.
local shared = module:shared("/*/cmr/delivery");
if not shared.unmark then
	function shared.unmark(stanza)
		-- Only stanzas pass here (a string's .attr is nil anyway).
		local attr = stanza.attr;
		if not (attr and attr[ROUTED_ALONE]) then return stanza; end
		-- A shallow copy: the queued original keeps its mark.
		local copy = setmetatable({ name = stanza.name, namespaces = stanza.namespaces, tags = stanza.tags, attr = {} },
			getmetatable(stanza));
		for k, v in pairs(attr) do if k ~= ROUTED_ALONE then copy.attr[k] = v; end end
		for i = 1, #stanza do copy[i] = stanza[i]; end
		return copy;
	end
end
-- After mod_smacks (-999), which queues what passes it. Once per session
-- (util.filters adds a filter once).
function unmarked_on(session)
	filters.add_filter(session, "stanzas/out", shared.unmark, -1000);
end
-- The resumption (XEP-0198's <resume/>, before mod_smacks handles it), and
-- on 13 any other way a session takes over a new connection (Prosody's
-- sessionmanager tells then, before the queue is resent).
local function on_resumption(event) unmarked_on(event.origin); end
module:hook("stanza/" .. xmlns_sm3 .. ":resume", on_resumption, 1);
module:hook("stanza/urn:xmpp:sm:2:resume", on_resumption, 1);
module:hook_global("c2s-session-updated", function (event)
	if event.session.host == module.host then unmarked_on(event.session); end
end);
-- Earlier versions of this module put the filter on every session through
-- a filter hook: it goes at a reload.
if shared.install then
	filters.remove_filter_hook(shared.install);
	shared.install = nil;
end

-- Takes the marks off the copies in every XEP-0198 queue of this host's
-- sessions (hibernating ones included), for when mod_cmr goes for good: a
-- reload's new instance goes on with them instead.
local function unmark_queues()
	for _, user in pairs(prosody.hosts[module.host].sessions or {}) do
		for _, session in pairs(user.sessions or {}) do
			local queue = session.outgoing_stanza_queue;
			if queue then
				for _, queued in queue:resume() do queued.attr[ROUTED_ALONE] = nil; end
			end
		end
	end
end

-- A session that ends with messages it never acknowledged (XEP-0198):
-- mod_smacks stores them offline only when it was the account's last
-- session and otherwise bounces them to the sender. Natively the other
-- top sessions had copies; with one session picked, a bounce is a loss. So
-- what CMR delivered to it alone (its mark says so) is routed again among
-- the remaining sessions, or stored offline when none is eligible; no other
-- session holds it, so neither makes a duplicate. Everything else in the
-- queue is mod_smacks' to handle, as without mod_cmr: what was sent to
-- this session's full JID, archive results, carbons, and what other
-- sessions hold too (under `all`, or as carbons). Runs before mod_smacks'
-- own handler.
module:hook("delivery/failure", function (event)
	local session, stanza = event.session, event.stanza;
	local mark = stanza.attr[ROUTED_ALONE];
	if not mark or not session.username then return; end
	stanza.attr[ROUTED_ALONE] = nil;
	if mark == "private" then stanza:tag("private", { xmlns = xmlns_carbons }):up(); end
	unregister(session);
	if route({ origin = {}, stanza = stanza }, jid_bare(session.full_jid)) then return true; end
	return module:fire_event("message/offline/handle", { origin = session, username = session.username, stanza = stanza });
end, 1);

--------------------------------------------------------------------------
-- Carbons (XEP-0280)
--------------------------------------------------------------------------

-- Carbons exist only where mod_carbons is loaded; without it no session can
-- have enabled them, and routing skips looking.
carbons_loaded = modulemanager.is_loaded(module.host, "carbons");
local function track_carbons(event)
	if event.module == "carbons" then
		carbons_loaded = modulemanager.is_loaded(module.host, "carbons");
	end
end
module:hook("module-loaded", track_carbons);
module:hook("module-unloaded", track_carbons);

-- The carbons rule, XEP-0280's: which messages are copied (by type,
-- <private/>, <no-copy/>) is mod_carbons' decision, asked here.
local function should_copy(stanza, origin)
	return module:fire_event("carbons-should-copy", { stanza = stanza; session = origin }) and true or false;
end

-- Sends a <received/> carbon to every carbons-enabled session of `bare`
-- that was not picked.
function send_carbons(stanza, bare, picked_sessions, origin)
	local user = bare_sessions[bare];
	if not user then return; end
	local carbon;
	for _, session in pairs(user.sessions) do
		if session.want_carbons and not picked_sessions[session] then
			if carbon == nil then
				if not should_copy(stanza, origin) then return; end
				local copy = st.clone(stanza);
				copy.attr.xmlns = "jabber:client";
				carbon = st.message { from = bare; type = stanza.attr.type }
					:tag("received", { xmlns = xmlns_carbons })
						:tag("forwarded", { xmlns = xmlns_forward })
							:add_child(copy):reset();
			end
			carbon.attr.to = session.full_jid;
			session.send(carbon);
		end
	end
end

-- Whether a session of `bare` other than `except` would get a carbon of
-- the stanza.
function copied_elsewhere(stanza, bare, except, origin)
	local user = bare_sessions[bare];
	if not user then return false; end
	for _, session in pairs(user.sessions) do
		if session ~= except and session.want_carbons then return should_copy(stanza, origin); end
	end
	return false;
end

--------------------------------------------------------------------------
-- Metrics
--------------------------------------------------------------------------

-- Prosody's statistics (mod_http_openmetrics serves them as
-- prosody_mod_cmr__*, labelled with the host) over the library's table of
-- series: one module:metric per family and unit, its series told apart by
-- their label. The library counts; the values are read from it whenever
-- Prosody collects: at each scrape with statistics_interval = "manual",
-- else every statistics_interval.
local metric_series = cmr.metric_series();
-- The labelled metric of each series, made once (in the table's order).
local series_metrics = {};
do
	local families = {};
	for i, series in ipairs(metric_series) do
		local name = series.family .. " " .. series.unit;
		families[name] = families[name] or module:metric(series.kind, series.family, series.unit, series.help,
			{ series.label ~= "" and series.label or nil });
		-- with_labels takes as many values as its family has labels.
		local family = families[name];
		series_metrics[i] = series.label == "" and family:with_labels() or family:with_labels(series.label_value);
	end
end

module:hook_global("stats-update", function ()
	local values, err, status = router:metric_values();
	if not values then return refused(status, err, "warn", "Metrics not read: %s", err); end
	for i, value in ipairs(values) do series_metrics[i]:set(value); end
end);

-- Prosody calls save before it unloads the module for a reload.
local reloading = false;
function module.save() reloading = true; end

-- Prosody keeps a module's series after it is unloaded: no session is
-- registered then. (A reload makes a new router, counting from 0.)
function module.unload()
	operated[module.host] = nil;
	for i, series in ipairs(metric_series) do
		if series.kind == "gauge" then series_metrics[i]:set(0); end
	end
	if not reloading then unmark_queues(); end
end

--------------------------------------------------------------------------
-- Ad-hoc commands and the operators' choice
--------------------------------------------------------------------------

-- The library builds the forms, checks what comes back and words the
-- answers; mod_adhoc lists the commands and keeps their sessions. Its
-- permissions are Prosody's own: any local user runs the routing command;
-- the admin command is for the host's admins ("admin": is_admin on 0.12,
-- the prosody:admin role on 13).
module:depends("adhoc");
local adhoc_new = module:require "adhoc".new;

-- A submitted form the library refused (not the command's own) or a call
-- that failed.
local function command_failed(err, status)
	refused(status, err, "debug", "Command refused: %s", err);
	if status == "panic" then return { status = "error", error = { type = "wait", condition = "internal-server-error" } }; end
	return { status = "error", error = { type = "modify", condition = "bad-request", text = err } };
end

-- The commands have one stage: its form, then the form submitted (execute
-- or complete). mod_adhoc passes any action on: prev, next or an unknown
-- one is refused, as ejabberd's and Openfire's frameworks do.
local function unexpected_action(data)
	if data.action ~= "execute" and data.action ~= "complete" then
		return { status = "error", error = { type = "modify", condition = "bad-request", text = "Unexpected action" } };
	end
end

local function routing_command(_, data)
	if data.action == "cancel" then return { status = "canceled" }; end
	local unexpected = unexpected_action(data);
	if unexpected then return unexpected; end
	local stage, answer, changed = router:routing_command(data.from, data.form and tostring(data.form));
	if not stage then return command_failed(answer, changed); end
	if stage == "form" then return { status = "executing", other = xml_parse(answer) }; end
	if changed then persist_choice(jid_bare(data.from)); end
	if stage == "refused" then return { status = "completed", error = { message = answer } }; end
	return { status = "completed", info = answer };
end
module:provides("adhoc", adhoc_new(cmr.routing_command.name, cmr.routing_command.node, routing_command, "local_user"));

-- The account an operator names, by Prosody's rules: the bare JID of an
-- account of this host. Its username | nil, why (naming the value).
local function local_account(account)
	local node, host, resource = jid_prepped_split(account);
	if not node or resource then return nil, ("'%s' is not an account's bare JID"):format(account); end
	if host ~= module.host then return nil, ("'%s' is not an account of %s"):format(account, module.host); end
	if not usermanager.user_exists(node, host) then return nil, ("there is no account '%s'"):format(account); end
	return node;
end

-- An operator's choice for an account (the admin command, the shell): not
-- bound by cmr_user_change; applied at once when the account is online,
-- else at its next first session; stored. uri | nil, why.
local function choose_for(account, algorithm)
	local username, why = local_account(account);
	if not username then return nil, why; end
	local uri, err, status = router:choose_for(username .. "@" .. module.host, algorithm);
	if not uri then return nil, err, status; end
	store:set(username, { algorithm = uri });
	return uri;
end

-- What applies to an account: its sessions', else its stored choice, else
-- the default. uri | nil, why.
local function algorithm_for(account)
	local username, why = local_account(account);
	if not username then return nil, why; end
	local data = store:get(username);
	return router:algorithm_for(username .. "@" .. module.host, data and data.algorithm);
end

local function admin_command(_, data)
	if data.action == "cancel" then return { status = "canceled" }; end
	local unexpected = unexpected_action(data);
	if unexpected then return unexpected; end
	if not data.form then
		local form, err, status = router:admin_form();
		if not form then return command_failed(err, status); end
		return { status = "executing", other = xml_parse(form) };
	end
	local submitted = tostring(data.form);
	local account, algorithm, err, status;
	account, err, status = cmr.admin_form_value(submitted, "accountjid");
	if not account then return command_failed(err, status); end
	algorithm, err, status = cmr.admin_form_value(submitted, "algorithm");
	if not algorithm then return command_failed(err, status); end
	local uri, why = choose_for(account, algorithm);
	if not uri then return { status = "completed", error = { message = why } }; end
	module:log("info", "%s set the routing of %s to %s", jid_bare(data.from), account, uri);
	return { status = "completed", info = router:choice_note(account, uri) or uri };
end
module:provides("adhoc", adhoc_new(cmr.admin_command.name, cmr.admin_command.node, admin_command, "admin"));

operated[module.host] = { router = router, choose_for = choose_for, algorithm_for = algorithm_for };

--------------------------------------------------------------------------
-- Admin shell
--------------------------------------------------------------------------

-- cmr:stats("user@host") prints the account's sessions and how many
-- messages each got; cmr:get("user@host") the algorithm that applies to it,
-- cmr:set("user@host", algorithm) sets it (as the admin command does).
local shell_env = module:shared("/*/admin_shell/env");
shell_env.cmr = {};

-- The host's calls for an account's JID | nil, why (naming the value).
local function operated_for(jid)
	local host = type(jid) == "string" and select(2, jid_prepped_split(jid));
	if not host then return nil, ("'%s' is not an account's bare JID"):format(tostring(jid)); end
	local calls = operated[host];
	if not calls then return nil, ("'%s': mod_cmr is not loaded on %s"):format(jid, host); end
	return calls;
end

function shell_env.cmr:stats(jid)
	local calls, err = operated_for(jid);
	if not calls then return false, err; end
	local table_text;
	table_text, err = calls.router:stats(jid);
	if not table_text then return false, err; end
	local algorithm;
	algorithm, err = calls.router:get_algorithm(jid);
	if not algorithm then return false, err; end
	self.session.print("algorithm\t" .. algorithm);
	for line in table_text:gmatch("[^\n]+") do self.session.print(line); end
	return true, "OK";
end

function shell_env.cmr:get(jid)
	local calls, err = operated_for(jid);
	if not calls then return false, err; end
	local uri;
	uri, err = calls.algorithm_for(jid);
	if not uri then return false, err; end
	return true, uri;
end

function shell_env.cmr:set(jid, algorithm)
	local calls, err = operated_for(jid);
	if not calls then return false, err; end
	if type(algorithm) ~= "string" then return false, "give the algorithm, by name or URI"; end
	local uri;
	uri, err = calls.choose_for(jid, algorithm);
	if not uri then return false, err; end
	return true, uri;
end

-- Sessions that exist when the module is loaded or reloaded.
for _, user in pairs(prosody.hosts[module.host].sessions or {}) do
	for _, session in pairs(user.sessions or {}) do register(session); end
end
