-- The Lua binding's test: the same script under lua5.4 (C module) and
-- luajit (FFI). `make lua-tests` runs both.
local cmr = require "cmr";

local passed, failed = 0, 0;
local function check(name, cond, detail)
	if cond then
		passed = passed + 1;
	else
		failed = failed + 1;
		io.stderr:write(("FAIL %s (%s backend): %s\n"):format(name, cmr.backend, tostring(detail)));
	end
end

check("version", cmr.version() == "0.1.0", cmr.version());
check("backend", cmr.backend == (jit and "luajit-ffi" or "lua"), cmr.backend);

local bad, err = cmr.new("offered=roundrobin");
check("bad options give nil, message", bad == nil and err:find("offered='roundrobin'", 1, true), err);
bad, err = cmr.new("colour=blue");
check("unknown option named", bad == nil and err:find("colour", 1, true), err);
-- Its longest kind: two inputs of control characters, quoted whole.
bad, err = cmr.new(("\1"):rep(700) .. "=" .. ("\1"):rep(899));
check("a bad option's message whole", bad == nil and err:find("(700 bytes in all)", 1, true)
	and err:find("(899 bytes in all)", 1, true), err);

local router = assert(cmr.new("default=roundrobin hints=any"));
local registered, new_account = router:register("Cluster@Example.ORG/node-1", 1, 0, "", true);
check("register: the account's first session", registered == true and new_account == true, new_account);
registered, new_account = router:register("cluster@example.org/node-2", 2, 0, "chat", true);
check("register 2: not the first", registered == true and new_account == false, new_account);
check("register unavailable", router:register("cluster@example.org/node-3", 3, 5, "", false) == true);
check("register negative", router:register("cluster@example.org/node-4", 4, -1, "away", true) == true);

local ok, status;
ok, err, status = router:register("cluster@example.org", 9, 0, "", true);
check("bare JID rejected", ok == nil and err:find("not a valid JID", 1, true) and status == "invalid_jid", err);
-- A message longer than the bindings' first buffer comes back whole.
ok, err = router:register("cluster@example.org/" .. ("r"):rep(1500), 9, 0, "", true);
check("long error message", ok == nil and err:find("bytes in all", 1, true) and #err > 200, err);
ok, err = router:register("cluster@example.org/x", 9, 200, "", true);
check("priority out of range", ok == nil and err:find("priority '200'", 1, true), err);
ok, err = router:register("cluster@example.org/x", 9, 1e12, "", true);
check("huge priority", ok == nil and err:find("out of range", 1, true), err);
ok, err = router:register("cluster@example.org/x", 9, 0, "busy", true);
check("bad show", ok == nil and err:find("show 'busy'", 1, true), err);
ok, err = router:register("cluster@example.org/\255", 9, 0, "", true);
check("invalid UTF-8", ok == nil and err:find("UTF-8", 1, true), err);

-- Round robin over the two eligible sessions, never 3 or 4.
local counts = {};
for _ = 1, 10 do
	local n, token = router:pick("cluster@example.org", "chat", "sensor@example.net/x");
	check("one token", n == 1, n);
	counts[token] = (counts[token] or 0) + 1;
end
check("round robin", counts[1] == 5 and counts[2] == 5 and not counts[3] and not counts[4], counts[1]);

check("headline not routed", router:pick("cluster@example.org", "headline") == 0);
check("unknown account not routed", router:pick("nobody@example.org", "chat") == 0);
local n;
n, err = router:pick("cluster@example.org\255", "chat");
check("pick bad UTF-8", n == nil and err:find("UTF-8", 1, true), err);

-- A hint (honoured from anyone here) selects mostactive: chat beats none.
local token;
n, token = router:pick("cluster@example.org", "chat", "s@example.net", "urn:xmpp:cmr:mostactive");
check("hint", n == 1 and token == 2, token);

-- all: more tokens than the binding's first buffer holds.
local big = assert(cmr.new("default=all"));
for i = 1, 40 do assert(big:register("big@example.org/r" .. i, 1000 + i, 1, "", true)); end
local picked = { big:pick("big@example.org", "") };
check("all, 40 tokens", picked[1] == 40 and #picked == 41 and picked[2] == 1001 and picked[41] == 1040, picked[1]);

-- picker: the same picks as a function, the tokens written into the given table.
local into = {};
check("picker, 40 tokens", big:picker(into)("big@example.org", "") == 40 and #into == 40 and into[1] == 1001
	and into[40] == 1040, #into);
local pick = router:picker(into);
into[2] = "kept";
check("picker, one token", pick("cluster@example.org", "chat", "s@example.net/x") == 1
	and (into[1] == 1 or into[1] == 2) and into[2] == "kept", into[1]);
check("picker, hint", pick("cluster@example.org", "chat", "s@example.net", "urn:xmpp:cmr:mostactive", true) == 1
	and into[1] == 2, into[1]);
check("picker, not routed", pick("cluster@example.org", "headline") == 0 and into[2] == "kept");
local status;
n, err, status = pick("cluster@example.org\255", "chat");
check("picker bad UTF-8", n == nil and err:find("UTF-8", 1, true) and status == "invalid_utf8", err);
check("picker: not a router", not pcall(router.picker, {}, into));
check("picker: no table", not pcall(router.picker, router, "tokens"));
check("picker: no recipient", not pcall(pick));

check("touch", router:touch("cluster@example.org/node-1", 1) == true);
ok, err = router:touch("cluster@example.org/node-1", 99);
check("touch stale token", ok == nil and err:find("not registered", 1, true), err);
check("set_load", router:set_load("cluster@example.org/node-1", 1, 7) == true);
-- Any number is a load: a fraction, an infinity or NaN from a client's count.
for _, load in ipairs { 0.5, -1e400, 1e400, 0/0 } do
	check("set_load " .. tostring(load), router:set_load("cluster@example.org/node-1", 1, load) == true);
end
check("set_hibernating", router:set_hibernating("cluster@example.org/node-1", 1, true) == true);
check("set_hibernating back", router:set_hibernating("cluster@example.org/node-1", 1, false) == true);
ok, err, status = router:set_hibernating("cluster@example.org/node-1", 99, true);
check("set_hibernating stale token", ok == nil and status == "not_found", err);

check("get_algorithm", router:get_algorithm("cluster@example.org") == "urn:xmpp:cmr:roundrobin");
check("set_algorithm", router:set_algorithm("cluster@example.org", "sticky") == true);
check("get after set", router:get_algorithm("cluster@example.org") == "urn:x-cmr:algorithm:sticky");
ok, err = router:set_algorithm("cluster@example.org", "fastest");
check("unknown algorithm", ok == nil and err:find("'fastest'", 1, true), err);

local reply, changed = router:handle_iq("<iq type='set' from='cluster@example.org/node-1' id='s1'>"
	.. "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:weighted'/></iq>");
check("iq set", reply and reply:find("type='result'", 1, true) and changed == true, reply);
reply, changed = router:handle_iq("<iq type='get' from='cluster@example.org/node-1' id='q1'>"
	.. "<query xmlns='urn:xmpp:cmr:0'/></iq>");
check("iq query", reply and reply:find("<active algorithm='urn:xmpp:cmr:weighted'/>", 1, true) and changed == false, reply);
check("iq not mine", router:handle_iq("<iq type='result' from='a@b/c' id='r'/>") == false);
reply, err = router:handle_iq("<iq type='get'><query");
check("iq malformed", reply == nil and err:find("invalid stanza", 1, true), err);

check("disco", router:disco_features() == "urn:xmpp:cmr:0\nurn:xmpp:cmr:hints:0");
local stats = router:stats("cluster@example.org");
check("stats", stats and stats:find("^resource\trouted") and stats:find("\nnode%-2\t%d+\t0\tchat\ttrue\t0\t2\tfalse\n"), stats);
-- The routing command: the form, then a submitted choice (changed: persist).
check("commands' nodes", cmr.routing_command.node == "urn:xmpp:cmr:0#routing"
	and cmr.routing_command.name == "Message routing" and cmr.admin_command.node:find("^urn:xmpp:cmr:0#"));
local stage, text, changed = router:routing_command("cluster@example.org/node-2");
check("routing form", stage == "form" and text:find("label='Round robin'", 1, true) and changed == false, text);
local submit = "<x xmlns='jabber:x:data' type='submit'><field var='algorithm'><value>%s</value></field></x>";
stage, text, changed = router:routing_command("cluster@example.org/node-2", submit:format("urn:xmpp:cmr:all"));
check("routing submitted", stage == "completed" and text:find("All resources", 1, true) and changed == true, text);
stage, text, changed = router:routing_command("cluster@example.org/node-2", submit:format("fastest"));
check("routing refused", stage == "refused" and text:find("'fastest'", 1, true) and changed == false, text);
ok, err, status = router:routing_command("cluster@example.org/node-2", submit:gsub("algorithm", "bogus"));
check("routing bogus form", ok == nil and status == "invalid_argument" and err:find("'bogus'", 1, true), err);
check("admin form", router:admin_form():find("var='accountjid'", 1, true));
local admin = "<x xmlns='jabber:x:data' type='submit'><field var='accountjid'><value>a@b</value></field>"
	.. "<field var='algorithm'><value>random</value></field></x>";
check("admin values", cmr.admin_form_value(admin, "accountjid") == "a@b" and cmr.admin_form_value(admin, "algorithm") == "random");
ok, err = cmr.admin_form_value(admin, "bogus");
check("admin value unknown", ok == nil and err:find("'bogus'", 1, true), err);
check("choice_note", router:choice_note("offline@example.org", "urn:x-cmr:algorithm:random")
	== "Messages to offline@example.org are now routed by: Random.");
check("choose_for offline", router:choose_for("offline@example.org", "random") == "urn:x-cmr:algorithm:random");
check("algorithm_for offline", router:algorithm_for("offline@example.org") == "urn:xmpp:cmr:roundrobin"
	and router:algorithm_for("offline@example.org", "urn:xmpp:cmr:weighted") == "urn:xmpp:cmr:weighted");
ok, err, status = router:choose_for("cluster@example.org", "fastest");
check("choose_for refused", ok == nil and status == "unknown_algorithm" and err:find("'fastest'", 1, true), err);
check("choose_for online", router:choose_for("cluster@example.org", "weighted") == "urn:xmpp:cmr:weighted"
	and router:get_algorithm("cluster@example.org") == "urn:xmpp:cmr:weighted");
check("unregister", router:unregister("cluster@example.org/node-1", 1) == true);
check("unregister by bare JID and token", router:unregister("cluster@example.org", 2) == true);
ok, err = router:unregister("cluster@example.org/node-1", 1);
check("unregister twice", ok == nil and err:find("not registered", 1, true), err);

-- Metrics: the library's table of series, and the values after known
-- calls on a router of their own, by series key.
local series = cmr.metric_series();
local keys, well_formed = {}, #series > 0;
for _, entry in ipairs(series) do
	keys[entry.key] = true;
	well_formed = well_formed and (entry.kind == "counter" or entry.kind == "gauge")
		and entry.metric:find("^cmr_") and entry.family ~= "" and entry.unit ~= "" and entry.help ~= ""
		and (entry.label == "") == (entry.label_value == "");
end
check("metric series: every field", well_formed, #series);
check("metric series: keys", keys.routed_roundrobin and keys.left_to_server_none and keys.gone_sessions
	and keys.iq_results and keys.iq_errors and keys.sessions and keys.accounts);
local function figures_of(r)
	local values = assert(r:metric_values());
	local figures = {};
	for i, entry in ipairs(series) do figures[entry.key] = values[i]; end
	return figures, #values;
end
local counted = assert(cmr.new("default=roundrobin hints=any"));
local figures, count = figures_of(counted);
local zero = count == #series;
for _, value in pairs(figures) do zero = zero and value == 0; end
check("metrics of a new router: a value per series, all 0", zero, count);
assert(counted:register("m@example.org/a", 1, 0, "", true));
assert(counted:register("m@example.org/b", 2, 0, "", true));
assert(counted:register("low@example.org/a", 3, -1, "", true));
for _ = 1, 3 do counted:pick("m@example.org", "chat", "s@example.net/x"); end
counted:pick("m@example.org", "normal", "s@example.net", "urn:xmpp:cmr:mostactive");
counted:pick("low@example.org", "chat");
counted:pick("nobody@example.org", "chat");
counted:pick("m@example.org", "headline");
counted:handle_iq("<iq type='get' from='m@example.org/a' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>");
counted:handle_iq("<iq type='set' from='m@example.org/a' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:example:fastest'/></iq>");
counted:handle_iq("<iq type='get'><query");
check("session_gone", counted:session_gone("m@example.org/a", 1) == true);
ok, err, status = counted:session_gone("m@example.org", 1);
check("session_gone twice: not_found", ok == nil and status == "not_found", err);
ok, err, status = counted:session_gone("m@example.org/\255", 2);
check("session_gone bad UTF-8", ok == nil and status == "invalid_utf8", err);
ok, err, status = counted:session_gone("@example.org", 2);
check("session_gone bad JID", ok == nil and status == "invalid_jid", err);
figures = figures_of(counted);
local function show(t)
	local parts = {};
	for k, v in pairs(t) do parts[#parts + 1] = k .. "=" .. tostring(v); end
	table.sort(parts);
	return table.concat(parts, " ");
end
check("metrics after known calls",
	figures.routed_roundrobin == 3 and figures.routed_mostactive == 1 and figures.routed_all == 0
	and figures.left_to_server_roundrobin == 1 and figures.left_to_server_weighted == 0
	and figures.left_to_server_none == 2 and figures.gone_sessions == 2
	and figures.iq_results == 1 and figures.iq_errors == 2
	and figures.sessions == 2 and figures.accounts == 2, show(figures));
check("metrics of another router untouched", figures_of(router).gone_sessions == 0);
check("metrics: not a router", not pcall(counted.metric_values, {}));
check("routing constants", cmr.max_picks_per_message > 0 and cmr.activity_interval_ms > 0);
check("session_gone: no token", not pcall(counted.session_gone, counted, "m@example.org/b"));

print(("%s: %d passed, %d failed"):format(cmr.backend, passed, failed));
os.exit(failed == 0 and 0 or 1);
