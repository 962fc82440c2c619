%%% mod_cmr: XEP-0354 Customizable Message Routing for ejabberd.
%%%
%%% The routing decisions live in the cmr library (through the cmr NIF
%%% module); this module feeds it the sessions' presence, activity and
%%% XEP-0198 load, asks it who gets each chat or normal message to a bare
%%% JID (or to an offline full JID), delivers to those sessions with `to`
%%% untouched, and answers XEP-0354 IQs through it. In a cluster, each
%%% account's sessions, messages and IQs go to the library of its home node
%%% (mod_cmr_cluster).
-module(mod_cmr).
-behaviour(gen_mod).
-protocol({xep, 354, '0.1'}).

-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1, mod_options/1, mod_doc/0]).
-export([sm_receive_packet/1, register_connection/3, remove_connection/3, set_presence/4, c2s_handle_cast/2,
         c2s_terminated/2,
         unset_presence/4, user_send_packet/1, user_receive_packet/1, c2s_handle_send/3,
         c2s_authenticated_packet/2,
         c2s_session_pending/1, c2s_session_resumed/1, process_iq/1,
         decode_iq_subel/1, disco_features/5, get_commands_spec/0, stats/1, metrics/1]).
%% For mod_cmr_cluster, and this module on other nodes.
-export([apply_event/2, forget/4, route_forwarded/2, route_natively/1, register_existing_sessions/1,
         local_stats/2, answer_iq/3]).

-include("xmpp.hrl").
-include("logger.hrl").
-include("ejabberd_commands.hrl").

-define(NS_CMR, <<"urn:xmpp:cmr:0">>).
%% A picked session can vanish between the pick and the delivery; each
%% attempt unregisters the gone ones it picked, so a few attempts settle.
-define(MAX_ATTEMPTS, 8).
%% How long a node waits for an account's home to answer an IQ or a stats
%% query.
-define(HOME_TIMEOUT_MS, 5000).

%% Replicated on every node that runs mod_cmr; written by the account's home.
-record(cmr_algorithm, {us :: {binary(), binary()}, algorithm :: binary()}).

%%% gen_mod

start(Host, Opts) ->
    case cmr:new(options_text(Opts)) of
        {ok, Router} ->
            persistent_term:put({?MODULE, Host}, Router),
            %% A node joining a cluster where the table exists gets a copy.
            ejabberd_mnesia:create(?MODULE, cmr_algorithm,
                                   [{disc_copies, [node()]}, {attributes, record_info(fields, cmr_algorithm)}]),
            ok = mod_cmr_cluster:start(Host),
            ejabberd_hooks:add(sm_register_connection_hook, Host, ?MODULE, register_connection, 50),
            ejabberd_hooks:add(sm_remove_connection_hook, Host, ?MODULE, remove_connection, 50),
            ejabberd_hooks:add(set_presence_hook, Host, ?MODULE, set_presence, 50),
            ejabberd_hooks:add(unset_presence_hook, Host, ?MODULE, unset_presence, 50),
            ejabberd_hooks:add(user_send_packet, Host, ?MODULE, user_send_packet, 50),
            ejabberd_hooks:add(c2s_handle_send, Host, ?MODULE, c2s_handle_send, 100),
            ejabberd_hooks:add(c2s_authenticated_packet, Host, ?MODULE, c2s_authenticated_packet, 40),
            ejabberd_hooks:add(c2s_session_pending, Host, ?MODULE, c2s_session_pending, 50),
            ejabberd_hooks:add(c2s_session_resumed, Host, ?MODULE, c2s_session_resumed, 50),
            ejabberd_hooks:add(c2s_handle_cast, Host, ?MODULE, c2s_handle_cast, 50),
            %% Before mod_stream_mgmt (50) resends what the session never
            %% acknowledged: none of it may be picked for this session.
            ejabberd_hooks:add(c2s_terminated, Host, ?MODULE, c2s_terminated, 40),
            %% Between mod_mam (88), which archives the one unmarked delivery,
            %% and mod_carboncopy (89), which must not copy what mod_cmr routed.
            ejabberd_hooks:add(user_receive_packet, Host, ?MODULE, user_receive_packet, 88.5),
            %% After mod_mam (50), so each message is archived once.
            ejabberd_hooks:add(sm_receive_packet, Host, ?MODULE, sm_receive_packet, 100),
            ejabberd_hooks:add(disco_local_features, Host, ?MODULE, disco_features, 50),
            ejabberd_hooks:add(disco_sm_features, Host, ?MODULE, disco_features, 50),
            gen_iq_handler:add_iq_handler(ejabberd_sm, Host, ?NS_CMR, ?MODULE, process_iq),
            gen_iq_handler:add_iq_handler(ejabberd_local, Host, ?NS_CMR, ?MODULE, process_iq),
            ejabberd_commands:register_commands(?MODULE, get_commands_spec()),
            register_existing_sessions(Host),
            logger:info("mod_cmr: cmr ~ts routing for ~ts", [cmr:version(), Host]),
            ok;
        {error, {_, Reason}} ->
            {error, Reason}
    end.

stop(Host) ->
    case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
        %% Before ejabberd 25.03, unregister_commands/1 deletes only a
        %% command identical to the one stored, which carries its definer.
        false -> ejabberd_commands:unregister_commands([C#ejabberd_commands{definer = ?MODULE}
                                                        || C <- get_commands_spec()]);
        true -> ok
    end,
    gen_iq_handler:remove_iq_handler(ejabberd_local, Host, ?NS_CMR),
    gen_iq_handler:remove_iq_handler(ejabberd_sm, Host, ?NS_CMR),
    ejabberd_hooks:delete(disco_sm_features, Host, ?MODULE, disco_features, 50),
    ejabberd_hooks:delete(disco_local_features, Host, ?MODULE, disco_features, 50),
    ejabberd_hooks:delete(sm_receive_packet, Host, ?MODULE, sm_receive_packet, 100),
    ejabberd_hooks:delete(user_receive_packet, Host, ?MODULE, user_receive_packet, 88.5),
    ejabberd_hooks:delete(c2s_terminated, Host, ?MODULE, c2s_terminated, 40),
    ejabberd_hooks:delete(c2s_handle_cast, Host, ?MODULE, c2s_handle_cast, 50),
    ejabberd_hooks:delete(c2s_session_resumed, Host, ?MODULE, c2s_session_resumed, 50),
    ejabberd_hooks:delete(c2s_session_pending, Host, ?MODULE, c2s_session_pending, 50),
    ejabberd_hooks:delete(c2s_authenticated_packet, Host, ?MODULE, c2s_authenticated_packet, 40),
    ejabberd_hooks:delete(c2s_handle_send, Host, ?MODULE, c2s_handle_send, 100),
    ejabberd_hooks:delete(user_send_packet, Host, ?MODULE, user_send_packet, 50),
    ejabberd_hooks:delete(unset_presence_hook, Host, ?MODULE, unset_presence, 50),
    ejabberd_hooks:delete(set_presence_hook, Host, ?MODULE, set_presence, 50),
    ejabberd_hooks:delete(sm_remove_connection_hook, Host, ?MODULE, remove_connection, 50),
    ejabberd_hooks:delete(sm_register_connection_hook, Host, ?MODULE, register_connection, 50),
    mod_cmr_cluster:stop(Host),
    persistent_term:erase({?MODULE, Host}),
    persistent_term:erase({?MODULE, failed, Host}),
    ok.

reload(Host, NewOpts, _OldOpts) ->
    stop(Host),
    start(Host, NewOpts).

depends(_Host, _Opts) -> [].

mod_opt_type(offered) -> econf:list(econf:binary());
mod_opt_type(default) -> econf:binary();
mod_opt_type(user_change) -> econf:bool();
mod_opt_type(hints) -> econf:enum([any, local, never]);
mod_opt_type(prefix) -> econf:binary().

mod_options(_Host) ->
    [{offered, []}, {default, <<"all">>}, {user_change, true}, {hints, local},
     {prefix, <<"urn:x-cmr:algorithm:">>}].

mod_doc() ->
    #{desc => ["XEP-0354 Customizable Message Routing: the account chooses how "
               "messages to its bare JID are spread over its sessions."],
      opts => [{offered, #{value => "[Algorithm]",
                           desc => "Algorithms users may choose, by short name or URI; "
                                   "must include all or mostactive. The default, [], offers all seven."}},
               {default, #{value => "Algorithm", desc => "The algorithm of an account that has not chosen. The default is all."}},
               {user_change, #{value => "true | false", desc => "Whether users may change it. The default is true."}},
               {hints, #{value => "any | local | never",
                         desc => "Whose message hints are honoured. The default is local."}},
               {prefix, #{value => "URI", desc => "URI prefix of the algorithms beyond XEP-0354."}}]}.

%% The library validates the options and names the one it rejects.
options_text(Opts) ->
    Offered = case gen_mod:get_opt(offered, Opts) of
                  [] -> [];
                  List -> [<<"offered=">>, lists:join(<<",">>, List), <<" ">>]
              end,
    iolist_to_binary([Offered,
                      <<"default=">>, gen_mod:get_opt(default, Opts),
                      <<" user_change=">>, atom_to_binary(gen_mod:get_opt(user_change, Opts)),
                      <<" hints=">>, atom_to_binary(gen_mod:get_opt(hints, Opts)),
                      <<" prefix=">>, gen_mod:get_opt(prefix, Opts)]).

router(Host) -> persistent_term:get({?MODULE, Host}, undefined).

%%% Sessions

full_jid(U, S, R) -> jid:encode({U, S, R}).

%% A session's token, derived from its SID wherever a hook sees the
%% session, so nothing needs storing (see mod_cmr_cluster:token/2).
sid_token({Timestamp, Pid}) ->
    mod_cmr_cluster:token(node(Pid), Timestamp).

%% Every change to a session goes to its account's home, as an event that
%% apply_event/2 applies there (here, when this node is the home).
event(S, U, Event) ->
    case mod_cmr_cluster:home(S, U, S) of
        Home when Home == node() -> apply_event(S, Event);
        Home -> mod_cmr_cluster:send_event(S, Home, Event)
    end.

register_session(S, {_, Pid} = SID, U, R, Priority, Show, Available) ->
    event(S, U, {register, U, S, R, sid_token(SID), Pid, Priority, Show, Available}).

unregister_session(S, {_, Pid} = SID, U, R) ->
    event(S, U, {unregister, U, S, R, sid_token(SID), Pid}).

%% On the account's home: the event applied to the library, and the
%% session's process kept beside its token for delivery.
apply_event(Host, Event) ->
    case router(Host) of
        undefined -> ok;
        Router -> apply_event(Host, Router, Event)
    end.

%% The account's persisted algorithm is applied when the library says a
%% register gave the account its first session (exactly one does, however
%% many sessions open at once).
apply_event(Host, Router, {register, U, S, R, Token, Pid, Priority, Show, Available}) ->
    ets:insert(mod_cmr_cluster:sessions(Host), {{U, S, Token}, Pid}),
    case cmr:register(Router, full_jid(U, S, R), Token, Priority, Show, Available) of
        ok -> ok;
        new_account -> restore(Router, U, S);
        {error, Error} -> refused(S, Error, "not routing to ~ts", [full_jid(U, S, R)])
    end;
apply_event(Host, Router, {unregister, U, S, R, Token, _Pid}) ->
    ets:delete(mod_cmr_cluster:sessions(Host), {U, S, Token}),
    cmr:unregister(Router, full_jid(U, S, R), Token);
apply_event(_Host, Router, {touch, U, S, R, Token}) ->
    cmr:touch(Router, full_jid(U, S, R), Token);
apply_event(_Host, Router, {load, U, S, R, Token, Load}) ->
    cmr:set_load(Router, full_jid(U, S, R), Token, Load);
apply_event(_Host, Router, {hibernating, U, S, R, Token, Hibernating}) ->
    case cmr:set_hibernating(Router, full_jid(U, S, R), Token, Hibernating) of
        ok -> ok;
        {error, Error} -> refused(S, Error, "hibernation of ~ts not followed", [full_jid(U, S, R)])
    end.

%% Removes a session known by its token only (its process or node down, or
%% its account homed elsewhere now), on this node's library.
forget(Host, U, S, Token) ->
    remove(Host, U, S, Token, fun cmr:unregister/3).

%% Removes a session a pick chose and found gone; the library counts it.
gone(Host, U, S, Token) ->
    remove(Host, U, S, Token, fun cmr:session_gone/3).

remove(Host, U, S, Token, Remove) ->
    ets:delete(mod_cmr_cluster:sessions(Host), {U, S, Token}),
    case router(Host) of
        undefined -> ok;
        Router -> Remove(Router, <<U/binary, "@", S/binary>>, Token)
    end.

restore(Router, U, S) ->
    case mnesia:dirty_read(cmr_algorithm, {U, S}) of
        [#cmr_algorithm{algorithm = Algorithm}] ->
            case cmr:set_algorithm(Router, <<U/binary, "@", S/binary>>, Algorithm) of
                ok -> ok;
                {error, Error} -> refused(S, Error, "stored algorithm of ~ts@~ts not restored", [U, S])
            end;
        [] -> ok
    end.

%% A call the library refused. `panic': it caught a bug and refuses every
%% call from now on; said once per host at error level, and ejabberd routes
%% messages itself (every caller falls back on an error).
refused(S, {panic, Reason}, _Format, _Args) ->
    case persistent_term:get({?MODULE, failed, S}, false) of
        true -> ok;
        false ->
            persistent_term:put({?MODULE, failed, S}, true),
            logger:error("mod_cmr: cmr failed on ~ts; ejabberd routes messages itself until mod_cmr is "
                         "restarted: ~ts", [S, Reason])
    end;
refused(_S, {_, Reason}, Format, Args) ->
    logger:warning("mod_cmr: " ++ Format ++ ": ~ts", Args ++ [Reason]).

register_connection(SID, #jid{luser = U, lserver = S, lresource = R}, _Info) ->
    register_session(S, SID, U, R, 0, <<>>, false).

remove_connection(SID, #jid{luser = U, lserver = S, lresource = R}, _Info) ->
    unregister_session(S, SID, U, R).

%% These hooks run in the session's own process; the session table may
%% already hold another session on the resource (one that replaced this
%% one, maybe on another node), which is not this presence's.
set_presence(U, S, R, #presence{show = Show, priority = Priority}) ->
    case ejabberd_sm:get_session_sid(U, S, R) of
        {_, Pid} = SID when Pid == self() -> register_session(S, SID, U, R, priority(Priority), show(Show), true);
        _ -> ok
    end.

unset_presence(U, S, R, _Status) ->
    case ejabberd_sm:get_session_sid(U, S, R) of
        {_, Pid} = SID when Pid == self() -> register_unavailable(S, SID, U, R);
        _ -> ok
    end.

%% Keeps the session registered but ineligible.
register_unavailable(S, SID, U, R) ->
    register_session(S, SID, U, R, 0, <<>>, false).

priority(undefined) -> 0;
priority(P) -> P.

show(undefined) -> <<>>;
show(Show) -> atom_to_binary(Show).

%% Registers the session as its last presence stands: available with its
%% priority and show, or unavailable.
register_presence(S, SID, U, R, #presence{type = available, show = Show, priority = Priority}) ->
    register_session(S, SID, U, R, priority(Priority), show(Show), true);
register_presence(S, SID, U, R, _NoPresence) ->
    register_unavailable(S, SID, U, R).

%% This node's sessions, when the module starts and whenever the nodes
%% running it change: each registers itself (with its account's home) from
%% its own state (its last presence, and whether it waits for resumption),
%% in its own process, so that nothing here waits on any of them.
register_existing_sessions(Host) ->
    lists:foreach(
      fun({U, S, R}) ->
              case ejabberd_sm:get_session_pid(U, S, R) of
                  Pid when is_pid(Pid), node(Pid) == node() -> xmpp_stream_in:cast(Pid, cmr_register);
                  _ -> ok
              end
      end, ejabberd_sm:get_vh_session_list(Host)).

c2s_handle_cast(#{jid := #jid{luser = U, lserver = S, lresource = R} = JID, sid := SID} = State, cmr_register) ->
    register_presence(S, SID, U, R, maps:get(pres_last, State, undefined)),
    case State of
        #{mgmt_state := pending} -> set_hibernating(State, true);
        _ -> ok
    end,
    %% The load too, as the account's home may be new.
    erase(cmr_load),
    case State of
        #{mgmt_queue := Queue} -> set_load(JID, SID, p1_queue:len(Queue));
        _ -> ok
    end,
    {stop, State};
c2s_handle_cast(State, _Msg) ->
    State.

%% A session that ends leaves the library before its unacknowledged
%% messages are resent, so that they go to the others.
c2s_terminated(#{jid := #jid{luser = U, lserver = S, lresource = R}, sid := SID} = State, _Reason) ->
    unregister_session(S, SID, U, R),
    State;
c2s_terminated(State, _Reason) ->
    State.

%% Activity for mostactive, at most once a second per session (the hook
%% runs in the session's own process).
user_send_packet({_Pkt, #{jid := #jid{luser = U, lserver = S, lresource = R}, sid := SID}} = Acc) ->
    Now = erlang:monotonic_time(second),
    case get(cmr_touched) of
        Now -> ok;
        _ ->
            put(cmr_touched, Now),
            event(S, U, {touch, U, S, R, sid_token(SID)})
    end,
    Acc;
user_send_packet(Acc) ->
    Acc.

%% Load for leastloaded: the session's unacknowledged XEP-0198 queue, after
%% each stanza sent to it (mod_stream_mgmt, at 50, has queued it)...
c2s_handle_send(#{mgmt_queue := Queue, sid := SID, jid := JID} = State, #message{}, _Result) ->
    set_load(JID, SID, p1_queue:len(Queue)),
    State;
c2s_handle_send(State, _Pkt, _Result) ->
    State.

%% ...and after each acknowledgement: what the client has not acknowledged
%% of what it was sent (XEP-0198 counters wrap at 2^32). This runs before
%% mod_stream_mgmt (50), which trims the queue and ends the hook.
c2s_authenticated_packet(#{mgmt_state := active, mgmt_queue := Queue, mgmt_stanzas_out := Out,
                           sid := SID, jid := JID} = State, #sm_a{h = H}) ->
    set_load(JID, SID, min(p1_queue:len(Queue), (Out - H) band 16#FFFFFFFF)),
    State;
c2s_authenticated_packet(State, _Pkt) ->
    State.

%% Only a change is sent: for a session away from its account's home, each
%% is a message to that node.
set_load(#jid{luser = U, lserver = S, lresource = R}, SID, Load) ->
    case put(cmr_load, Load) of
        Load -> ok;
        _ -> event(S, U, {load, U, S, R, sid_token(SID), Load})
    end.

%% A session waiting for XEP-0198 resumption gets messages only when no
%% other session can, and keeps them for its resumption; on timeout they
%% are resent (resend_on_timeout).
c2s_session_pending(State) ->
    set_hibernating(State, true).

%% The resumed stream may bind the session anew (a new SID, registered
%% unavailable by register_connection/3): its presence is taken again from
%% the session manager, as the client sends none on resumption.
c2s_session_resumed(#{jid := #jid{luser = U, lserver = S, lresource = R}, sid := SID} = State) ->
    register_presence(S, SID, U, R, maps:get(pres_last, State, undefined)),
    set_hibernating(State, false);
c2s_session_resumed(State) ->
    State.

set_hibernating(#{jid := #jid{luser = U, lserver = S, lresource = R}, sid := SID} = State, Hibernating) ->
    event(S, U, {hibernating, U, S, R, sid_token(SID), Hibernating}),
    State;
set_hibernating(State, _Hibernating) ->
    State.

%%% Routing

sm_receive_packet(#message{meta = #{cmr_native := true}} = Msg) ->
    Msg;
sm_receive_packet(#message{type = Type, to = #jid{luser = U, lserver = S, lresource = R}} = Msg)
  when Type == chat; Type == normal ->
    Online = R /= <<>> andalso ejabberd_sm:get_session_pid(U, S, R) /= none,
    case {Online, router(S)} of
        {false, Router} when Router /= undefined ->
            case mod_cmr_cluster:home(S, U, S) of
                Home when Home == node() -> route(Router, Msg, U, S);
                Home -> mod_cmr_cluster:forward(S, Home, Msg), {stop, drop}
            end;
        _ -> Msg
    end;
sm_receive_packet(Acc) ->
    Acc.

%% On the account's home, a message another node forwarded: routed here,
%% or by ejabberd when the library leaves it to the server.
route_forwarded(Host, #message{to = #jid{luser = U, lserver = S}} = Msg) ->
    case router(Host) of
        undefined -> route_natively(Msg);
        Router ->
            case route(Router, Msg, U, S) of
                {stop, drop} -> ok;
                Unrouted -> route_natively(Unrouted)
            end
    end.

%% ejabberd's own routing, from the session manager on (mod_cmr passes it).
route_natively(Msg) ->
    ejabberd_sm:route(xmpp:put_meta(Msg, cmr_native, true)).

%% Returns {stop, drop} when delivered; the message itself lets ejabberd
%% route it (nothing eligible: offline storage or error). An account with
%% a session on a cluster node that runs no mod_cmr (a rolling upgrade) is
%% left to ejabberd: no library sees that session.
route(Router, Msg, U, S) ->
    case mod_cmr_cluster:outsiders(S) of
        [] ->
            route(Router, Msg, U, S, ?MAX_ATTEMPTS);
        Outsiders ->
            case lists:any(fun({_, Pid}) -> lists:member(node(Pid), Outsiders) end, ejabberd_sm:get_session_sids(U, S)) of
                true -> Msg;
                false -> route(Router, Msg, U, S, ?MAX_ATTEMPTS)
            end
    end.

route(_Router, Msg, _U, _S, 0) ->
    Msg;
route(Router, #message{type = Type, from = From} = Msg, U, S, Attempts) ->
    Hint = hint(Msg),
    Bare = <<U/binary, "@", S/binary>>,
    case cmr:pick(Router, Bare, type(Type), sender(From), Hint, is_local(From, Hint)) of
        Tokens when is_list(Tokens) ->
            Sessions = mod_cmr_cluster:sessions(S),
            Picked = [{Token, Pid} || Token <- Tokens, {_, Pid} <- ets:lookup(Sessions, {U, S, Token})],
            Delivered = deliver(S, Msg, [Pid || {_, Pid} <- Picked]),
            %% A picked session that is gone (unknown here, or its process
            %% or node down) leaves the library before the message is
            %% picked again.
            [gone(S, U, S, Token) || Token <- Tokens,
                                     not lists:any(fun({T, Pid}) -> T == Token andalso lists:member(Pid, Delivered) end,
                                                   Picked)],
            case Delivered of
                [] ->
                    route(Router, Msg, U, S, Attempts - 1);
                _ ->
                    send_carbons(Msg, U, S, Delivered),
                    {stop, drop}
            end;
        not_routed ->
            Msg;
        {error, Error} ->
            refused(S, Error, "not routing a message to ~ts", [Bare]),
            Msg
    end.

type(chat) -> <<"chat">>;
type(normal) -> <<"normal">>.

%% The sender's bare JID, from its already normalized parts: sticky hashes
%% the bare JID only, and jid:encode/1 would prepare the strings again.
sender(undefined) -> <<>>;
sender(#jid{luser = <<>>, lserver = S}) -> S;
sender(#jid{luser = U, lserver = S}) -> <<U/binary, "@", S/binary>>.

%% Whether the sender is a user of this server matters for a hint only.
is_local(_From, <<>>) -> false;
is_local(undefined, _Hint) -> false;
is_local(#jid{lserver = S}, _Hint) -> lists:member(S, ejabberd_option:hosts()).

%% Delivers to each picked session's process and returns the pids that
%% took it: local ones alive, remote ones on a connected node (what was
%% delivered to another node is kept a moment, in case that node dies).
deliver(Host, Msg, Pids) ->
    case [Pid || Pid <- Pids, reachable(Pid)] of
        [] ->
            [];
        [First | Rest] = Live ->
            case lists:usort([node(Pid) || Pid <- Live]) -- [node()] of
                [] -> ok;
                Nodes -> mod_cmr_cluster:journal(Host, Nodes, Msg)
            end,
            %% As ejabberd itself does, the first delivery is the original
            %% (mod_mam archives it) and the others are marked sm_copy.
            ejabberd_c2s:route(First, {route, xmpp:put_meta(Msg, cmr_routed, true)}),
            Rest /= [] andalso route_copies(xmpp:put_meta(Msg, sm_copy, true), Rest),
            Live
    end.

reachable(Pid) when node(Pid) == node() -> is_process_alive(Pid);
reachable(Pid) -> lists:member(node(Pid), nodes()).

route_copies(Copy, Pids) ->
    lists:foreach(fun(Pid) -> ejabberd_c2s:route(Pid, {route, Copy}) end, Pids).

%% After mod_mam archived the original of a message mod_cmr routed: mark it
%% sm_copy, so that mod_carboncopy leaves the copies to mod_cmr.
user_receive_packet({#message{meta = #{cmr_routed := true}} = Msg, State}) ->
    {xmpp:put_meta(Msg, sm_copy, true), State};
user_receive_packet(Acc) ->
    Acc.

hint(#message{sub_els = Els}) ->
    case [A || #xmlel{name = <<"cmr">>, attrs = Attrs} <- Els,
               proplists:get_value(<<"xmlns">>, Attrs) == ?NS_CMR,
               A <- [proplists:get_value(<<"algorithm">>, Attrs, <<>>)]] of
        [Algorithm | _] -> Algorithm;
        [] -> <<>>
    end.

%% The picked sessions (the pids in Delivered) got the message; every other
%% available, carbons-enabled session gets a <received/> copy (XEP-0280 rules).
send_carbons(#message{type = Type} = Msg, U, S, Delivered) ->
    %% Without mod_carboncopy no session can have enabled carbons.
    case gen_mod:is_loaded(S, mod_carboncopy) andalso should_copy(Msg) of
        false -> ok;
        true ->
            Available = [Res || {_, Res} <- ejabberd_sm:get_user_present_resources(U, S)],
            Bare = jid:make(U, S),
            lists:foreach(
              fun({Res, Info}) ->
                      case proplists:is_defined(carboncopy, Info) andalso lists:member(Res, Available)
                          andalso not lists:member(ejabberd_sm:get_session_pid(U, S, Res), Delivered) of
                          true ->
                              Dest = jid:make(U, S, Res),
                              Carbon = #carbons_received{forwarded = #forwarded{sub_els = [Msg]}},
                              ejabberd_router:route(#message{from = Bare, to = Dest, type = Type, sub_els = [Carbon],
                                                             meta = #{carbon_copy => true}});
                          false -> ok
                      end
              end, ejabberd_sm:get_user_info(U, S))
    end.

should_copy(#message{type = Type, body = Body} = Msg) ->
    (Type == chat orelse (Type == normal andalso Body /= []))
        andalso not xmpp:has_subtag(Msg, #carbons_private{})
        andalso not xmpp:has_subtag(Msg, #hint{type = 'no-copy'}).

%%% Commands: ejabberdctl, and mod_http_api or ejabberd_xmlrpc alike

get_commands_spec() ->
    [#ejabberd_commands{name = cmr_stats, tags = [session],
                        desc = "Show an account's sessions and the messages mod_cmr routed to each",
                        module = ?MODULE, function = stats,
                        args = [{jid, binary}],
                        args_desc = ["Bare JID of the account"],
                        args_example = [<<"sensors@example.org">>],
                        result = {stats, string},
                        result_desc = "The active algorithm, then one tab-separated line per session"},
     #ejabberd_commands{name = cmr_metrics, tags = [statistics],
                        desc = "Get mod_cmr's metrics for this host on this node",
                        longdesc = metrics_doc(),
                        policy = admin,
                        module = ?MODULE, function = metrics,
                        args = [{host, binary}],
                        args_desc = ["Virtual host"],
                        args_example = [<<"example.org">>],
                        result = {metrics, {list, {metric, {tuple, [{name, string}, {algorithm, string},
                                                                    {type, string}, {value, integer}]}}}},
                        result_desc = "One metric per line: name, algorithm (empty when the metric has none), "
                                      "type (counter or gauge), value",
                        result_example = [{<<"cmr_messages_routed_total">>, <<"roundrobin">>, <<"counter">>, 30},
                                          {<<"cmr_sessions">>, <<>>, <<"gauge">>, 5}]}].

%% The library's figure, name, type and meaning of each metric, in the
%% order served.
metric_families() ->
    [{routed, <<"cmr_messages_routed_total">>, counter,
      "messages to a bare JID (or an offline full JID) routed by CMR to the sessions it picked, per "
      "algorithm (a hint's when it applied)"},
     {left_to_server, <<"cmr_messages_left_to_server_total">>, counter,
      "messages left to ejabberd's own routing (offline storage, or an error), per algorithm: the "
      "account's sessions were all ineligible; algorithm none: the account had no session "
      "registered"},
     {gone_sessions, <<"cmr_gone_sessions_total">>, counter,
      "picked sessions found gone at delivery (process or node down); the message is picked again"},
     {iq_results, <<"cmr_iq_results_total">>, counter, "XEP-0354 IQs answered with a result"},
     {iq_errors, <<"cmr_iq_errors_total">>, counter, "XEP-0354 IQs answered with an error, malformed ones included"},
     {sessions, <<"cmr_sessions">>, gauge, "sessions registered in this node's library now"},
     {accounts, <<"cmr_accounts">>, gauge, "accounts with a session registered in this node's library now"}].

metrics_doc() ->
    lists:flatten(
      ["The figures of this node's mod_cmr library for the virtual host, read when asked (in a cluster, "
       "each node answers for the accounts homed there). Counters count from mod_cmr's start on the host "
       "(a restart or reload of the module starts them again); a message picked again after a gone "
       "session counts once per pick. ",
       [io_lib:format("`~ts` (~ts): ~ts. ", [Name, Type, Help]) || {_, Name, Type, Help} <- metric_families()]]).

%% This node's figures for the host, read from its library now.
metrics(Host) ->
    case router(Host) of
        undefined ->
            {error, not_exists, 1, lists:flatten(io_lib:format("mod_cmr is not running for ~ts on ~ts", [Host, node()]))};
        Router ->
            case cmr:metrics(Router) of
                {ok, Figures} -> lists:append([rows(Name, Type, figure(Key, Figures)) || {Key, Name, Type, _} <- metric_families()]);
                {error, {_, Reason}} -> {error, internal_error, 1, binary_to_list(Reason)}
            end
    end.

%% Messages left to ejabberd with no algorithm applied: algorithm none.
figure(left_to_server, #{left_to_server := PerAlgorithm, left_to_server_unclaimed := Unclaimed}) ->
    PerAlgorithm#{<<"none">> => Unclaimed};
figure(Key, Figures) ->
    maps:get(Key, Figures).

%% {Name, Algorithm, Type, Value} rows.
rows(Name, Type, PerAlgorithm) when is_map(PerAlgorithm) ->
    [{Name, Algorithm, atom_to_binary(Type), Value} || {Algorithm, Value} <- lists:sort(maps:to_list(PerAlgorithm))];
rows(Name, Type, Value) ->
    [{Name, <<>>, atom_to_binary(Type), Value}].

%% Asked on any node; answered by the account's home, with the node of
%% each session.
stats(Jid) ->
    case catch jid:decode(Jid) of
        {'EXIT', _} ->
            "not a JID: " ++ binary_to_list(Jid);
        #jid{luser = U, lserver = S} ->
            case router(S) of
                undefined -> "mod_cmr is not loaded on " ++ binary_to_list(S);
                _ ->
                    Home = mod_cmr_cluster:home(S, U, S),
                    Answer = case on_home(Home, local_stats, [S, Jid]) of
                                 {ok, Text} -> binary_to_list(Text);
                                 {error, Reason} -> Reason ++ "\n"
                             end,
                    "home\t" ++ atom_to_list(Home) ++ "\n" ++ Answer
            end
    end.

%% Runs a function of this module on the account's home.
on_home(Home, Function, Args) when Home == node() ->
    apply(?MODULE, Function, Args);
on_home(Home, Function, Args) ->
    try erpc:call(Home, ?MODULE, Function, Args, ?HOME_TIMEOUT_MS)
    catch Class:Reason ->
            {error, lists:flatten(io_lib:format("the account's home node ~ts did not answer: ~p:~p",
                                                [Home, Class, Reason]))}
    end.

local_stats(Host, Jid) ->
    #jid{luser = U, lserver = S} = jid:decode(Jid),
    case router(Host) of
        undefined -> {error, "mod_cmr is not loaded on " ++ atom_to_list(node())};
        Router ->
            case {cmr:get_algorithm(Router, Jid), cmr:stats(Router, Jid)} of
                {{ok, Algorithm}, {ok, Table}} ->
                    [Header | Rows] = binary:split(Table, <<"\n">>, [global, trim]),
                    Sessions = mod_cmr_cluster:sessions(Host),
                    Columns = binary:split(Header, <<"\t">>, [global]),
                    TokenAt = length(lists:takewhile(fun(C) -> C =/= <<"token">> end, Columns)) + 1,
                    Lines = [<<Header/binary, "\tnode">> | [<<Row/binary, "\t", (session_node(Sessions, U, S, TokenAt, Row))/binary>>
                                                           || Row <- Rows]],
                    {ok, iolist_to_binary([<<"algorithm\t">>, Algorithm, <<"\n">>, lists:join(<<"\n">>, Lines), <<"\n">>])};
                {{error, {_, Reason}}, _} -> {error, binary_to_list(Reason)};
                {_, {error, {_, Reason}}} -> {error, binary_to_list(Reason)}
            end
    end.

%% The node of the session in a stats row, whose column TokenAt (found by
%% its name in the header) is its token.
session_node(Sessions, U, S, TokenAt, Row) ->
    Token = binary_to_integer(lists:nth(TokenAt, binary:split(Row, <<"\t">>, [global]))),
    case ets:lookup(Sessions, {U, S, Token}) of
        [{_, Pid}] -> atom_to_binary(node(Pid));
        [] -> <<"?">>
    end.

%%% XEP-0354 IQs and disco

decode_iq_subel(El) -> El.

%% Answered by the account's home, which persists a change.
process_iq(#iq{to = #jid{lserver = S}, from = #jid{luser = U}, lang = Lang} = IQ) ->
    case router(S) of
        undefined -> xmpp:make_error(IQ, xmpp:err_service_unavailable());
        _ ->
            case on_home(mod_cmr_cluster:home(S, U, S), answer_iq, [S, IQ#iq.from, fxml:element_to_binary(xmpp:encode(IQ))]) of
                {ok, Reply} ->
                    xmpp:decode(fxml_stream:parse_element(Reply), ?NS_CLIENT, [ignore_els]);
                not_mine ->
                    xmpp:make_error(IQ, xmpp:err_service_unavailable());
                {error, {panic, _}} ->
                    xmpp:make_error(IQ, xmpp:err_internal_server_error());
                {error, {_, Reason}} ->
                    xmpp:make_error(IQ, xmpp:err_bad_request(Reason, Lang));
                {error, Unanswered} ->
                    ?WARNING_MSG("mod_cmr: ~ts", [Unanswered]),
                    xmpp:make_error(IQ, xmpp:err_internal_server_error(list_to_binary(Unanswered), Lang))
            end
    end.

answer_iq(Host, From, Xml) ->
    case router(Host) of
        undefined -> not_mine;
        Router ->
            case cmr:handle_iq(Router, Xml) of
                {ok, Reply, Changed} ->
                    Changed andalso persist(Router, From),
                    {ok, Reply};
                {error, {panic, _} = Error} ->
                    refused(Host, Error, "", []),
                    {error, Error};
                {error, {_, Reason}} = Error ->
                    %% A client's malformed IQ: answered, and not worth a
                    %% warning each.
                    ?DEBUG("mod_cmr: cannot answer an IQ: ~ts", [Reason]),
                    Error;
                not_mine ->
                    not_mine
            end
    end.

persist(Router, #jid{luser = U, lserver = S}) ->
    case cmr:get_algorithm(Router, <<U/binary, "@", S/binary>>) of
        {ok, Algorithm} -> mnesia:dirty_write(#cmr_algorithm{us = {U, S}, algorithm = Algorithm});
        {error, Error} -> refused(S, Error, "the choice of ~ts@~ts is not stored", [U, S])
    end.

disco_features({error, _} = Acc, _From, _To, _Node, _Lang) ->
    Acc;
disco_features(Acc, _From, #jid{lserver = S}, <<>>, _Lang) ->
    Existing = case Acc of {result, Features} -> Features; _ -> [] end,
    case router(S) of
        undefined -> Acc;
        Router ->
            case cmr:disco_features(Router) of
                {ok, Text} -> {result, binary:split(Text, <<"\n">>, [global]) ++ Existing};
                {error, Error} -> refused(S, Error, "disco features not given", []), Acc
            end
    end;
disco_features(Acc, _From, _To, _Node, _Lang) ->
    Acc.
