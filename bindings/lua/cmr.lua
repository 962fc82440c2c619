-- cmr for Lua: XEP-0354 Customizable Message Routing (see README.md).
--
-- Under LuaJIT the binding uses the FFI (cmr_ffi.lua); under PUC Lua 5.4 a
-- small C module (cmr_core.so). Both offer the same API:
--
--   local cmr = require "cmr"
--   local router, err = cmr.new("default=roundrobin hints=local")
--   router:register(full_jid, token, priority, show, available) --> true, new_account | nil, err, status
--   router:unregister(jid, token)                               --> true | nil, err, status
--   router:touch(full_jid, token)                               --> true | nil, err, status
--   router:set_load(full_jid, token, load)                      --> true | nil, err, status
--   router:set_hibernating(full_jid, token, hibernating)        --> true | nil, err, status
--   router:pick(bare_jid, type, sender, hint, sender_is_local)  --> n, token1, ..., tokenN
--                                     (n = 0: not routed, the host routes it) | nil, err, status
--   router:get_algorithm(bare_jid)                              --> uri | nil, err, status
--   router:set_algorithm(bare_jid, name_or_uri)                 --> true | nil, err, status
--   router:handle_iq(xml)            --> reply_xml, changed | false (not a CMR IQ) | nil, err, status
--   router:disco_features()          --> "feature\nfeature" | nil, err, status
--   router:stats(bare_jid)           --> tab-separated table | nil, err, status
--   cmr.version(), cmr.backend
--
-- `new_account` is true for the register call that gave the account its
-- first session: the host restores the persisted algorithm then. `status`
-- names the error (invalid_jid, not_found, ...); "panic" means the router
-- caught a bug and refuses every call from then on.
--
-- Tokens are integers; keep them below 2^53 (LuaJIT numbers are doubles).
-- rawget: hosts such as Prosody warn on reading an undefined global.
if rawget(_G, "jit") then
	return require "cmr_ffi";
end
return require "cmr_core";
