%%% mod_cmr: XEP-0354 Customizable Message Routing for ejabberd.
%%%
%%% The routing decisions live in the cmr library (through the cmr NIF
%%% module). This module holds what ejabberd calls: gen_mod, the hooks, the
%%% IQ handler, disco and the commands. It feeds the library the sessions'
%%% presence, activity and XEP-0198 load, hands it every message to a bare
%%% JID (or to an offline full JID), which it delivers to the sessions the
%%% library picks with `to` untouched, and answers XEP-0354 IQs through it.
%%%
%%% Three modules, calls going one way: mod_cmr (the hooks) calls
%%% mod_cmr_cluster (the transport: each account's sessions, messages and
%%% IQs go to its home node) and mod_cmr_home (the library, its router and
%%% tables, on the account's home); mod_cmr_cluster calls mod_cmr_home.
%%% Neither calls back.
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

-include("xmpp.hrl").
-include("logger.hrl").
-include("ejabberd_commands.hrl").

-define(NS_CMR, <<"urn:xmpp:cmr:0">>).

%%% gen_mod

start(Host, Opts) ->
    case mod_cmr_home:start(Host, options_text(Opts)) of
        ok ->
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
            mod_cmr_cluster:register_existing_sessions(Host),
            logger:info("mod_cmr: cmr ~ts routing for ~ts", [cmr:version(), Host]),
            ok;
        {error, Reason} ->
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
    mod_cmr_home:stop(Host),
    ok.

reload(Host, NewOpts, _OldOpts) ->
    stop(Host),
    start(Host, NewOpts).

depends(_Host, _Opts) -> [].

mod_opt_type(offered) -> econf:list(econf:binary());
mod_opt_type(default) -> econf:binary();
mod_opt_type(user_change) -> econf:bool();
mod_opt_type(hints) -> econf:binary();
mod_opt_type(prefix) -> econf:binary().

%% An option the operator does not set is not passed to the library, whose
%% default applies (see the cmr README).
mod_options(_Host) ->
    [{Option, undefined} || Option <- [offered, default, user_change, hints, prefix]].

mod_doc() ->
    #{desc => ["XEP-0354 Customizable Message Routing: the account chooses how "
               "messages to its bare JID are spread over its sessions. An option "
               "left out takes the cmr library's default."],
      opts => [{offered, #{value => "[Algorithm]",
                           desc => "Algorithms users may choose, by short name or URI; "
                                   "must include all or mostactive. The library's default (also that of an empty list) offers all seven."}},
               {default, #{value => "Algorithm",
                           desc => "The algorithm of an account that has not chosen. The library's default is all."}},
               {user_change, #{value => "true | false",
                               desc => "Whether users may change it. The library's default is true."}},
               {hints, #{value => "any | local | never",
                         desc => "Whose message hints are honoured. The library's default is local."}},
               {prefix, #{value => "URI", desc => "URI prefix of the algorithms beyond XEP-0354."}}]}.

%% The library's options text, of the options set; the library validates
%% them (which algorithms and hint policies exist is its to know) and names
%% the one it rejects. `offered: []`, the default earlier versions
%% documented, is the same as leaving it out.
options_text(Opts) ->
    Set = [{Option, Value} || Option <- [offered, default, user_change, hints, prefix],
                              (Value = gen_mod:get_opt(Option, Opts)) /= undefined, Value /= []],
    iolist_to_binary(lists:join(<<" ">>, [[atom_to_binary(Option), <<"=">>, option_text(Value)]
                                          || {Option, Value} <- Set])).

option_text(List) when is_list(List) -> lists:join(<<",">>, List);
option_text(Atom) when is_atom(Atom) -> atom_to_binary(Atom);
option_text(Text) -> Text.

%%% Sessions

%% A session's token, derived from its SID wherever a hook sees the
%% session, so nothing needs storing (see mod_cmr_cluster:token/2).
sid_token({Timestamp, Pid}) ->
    mod_cmr_cluster:token(node(Pid), Timestamp).

%% Every change to a session goes to its account's home, as an event that
%% mod_cmr_home:apply_event/2 applies there.
event(S, U, Event) ->
    mod_cmr_cluster:send_event(S, U, Event).

register_session(S, {_, Pid} = SID, U, R, Priority, Show, Available) ->
    event(S, U, {register, U, S, R, sid_token(SID), Pid, Priority, Show, Available}).

unregister_session(S, {_, Pid} = SID, U, R) ->
    event(S, U, {unregister, U, S, R, sid_token(SID), Pid}).

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

%% Activity for mostactive, at most once per the library's interval per
%% session (the hook runs in the session's own process).
user_send_packet({_Pkt, #{jid := #jid{luser = U, lserver = S, lresource = R}, sid := SID}} = Acc) ->
    Now = erlang:monotonic_time(millisecond),
    Interval = mod_cmr_home:activity_interval_ms(),
    case get(cmr_touched) of
        Touched when is_integer(Touched), Now - Touched < Interval -> ok;
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
%% Every message to a bare JID, or to an offline full JID: the library
%% says which it routes (not headline, groupchat or error).
sm_receive_packet(#message{to = #jid{luser = U, lserver = S, lresource = R}} = Msg) ->
    Online = R /= <<>> andalso ejabberd_sm:get_session_pid(U, S, R) /= none,
    case not Online andalso mod_cmr_home:running(S) of
        true -> mod_cmr_cluster:route(S, Msg);
        false -> Msg
    end;
sm_receive_packet(Acc) ->
    Acc.

%% After mod_mam archived the original of a message mod_cmr routed: mark it
%% sm_copy, so that mod_carboncopy leaves the copies to mod_cmr.
user_receive_packet({#message{meta = #{cmr_routed := true}} = Msg, State}) ->
    {xmpp:put_meta(Msg, sm_copy, true), State};
user_receive_packet(Acc) ->
    Acc.

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
                        longdesc = mod_cmr_home:metrics_doc(),
                        policy = admin,
                        module = ?MODULE, function = metrics,
                        args = [{host, binary}],
                        args_desc = ["Virtual host"],
                        args_example = [<<"example.org">>],
                        result = {metrics, {list, {metric, {tuple, [{name, string}, {algorithm, string},
                                                                    {type, string}, {value, integer}]}}}},
                        result_desc = "One metric per line: name, algorithm (empty when the metric has none), "
                                      "type (counter or gauge), value",
                        result_example = mod_cmr_home:metric_rows_example()}].

%% This node's figures for the host, read from its library now.
metrics(Host) ->
    mod_cmr_home:metric_rows(Host).

%% Asked on any node; answered by the account's home, with the node of
%% each session.
stats(Jid) ->
    case catch jid:decode(Jid) of
        {'EXIT', _} ->
            "not a JID: " ++ binary_to_list(Jid);
        #jid{luser = U, lserver = S} ->
            case mod_cmr_home:running(S) of
                false -> "mod_cmr is not loaded on " ++ binary_to_list(S);
                true ->
                    {Home, Answer} = mod_cmr_cluster:call_home(S, U, local_stats, [S, Jid]),
                    "home\t" ++ atom_to_list(Home) ++ "\n" ++ case Answer of
                                                                  {ok, Text} -> binary_to_list(Text);
                                                                  {error, Reason} -> Reason ++ "\n"
                                                              end
            end
    end.

%%% XEP-0354 IQs and disco

decode_iq_subel(El) -> El.

%% Answered by the account's home, which persists a change.
process_iq(#iq{to = #jid{lserver = S}, from = #jid{luser = U}, lang = Lang} = IQ) ->
    case mod_cmr_home:running(S) of
        false -> xmpp:make_error(IQ, xmpp:err_service_unavailable());
        true ->
            case mod_cmr_cluster:call_home(S, U, answer_iq, [S, IQ#iq.from, fxml:element_to_binary(xmpp:encode(IQ))]) of
                {_Home, {ok, Reply}} ->
                    xmpp:decode(fxml_stream:parse_element(Reply), ?NS_CLIENT, [ignore_els]);
                {_Home, not_mine} ->
                    xmpp:make_error(IQ, xmpp:err_service_unavailable());
                {_Home, {error, {panic, _}}} ->
                    xmpp:make_error(IQ, xmpp:err_internal_server_error());
                {_Home, {error, {_, Reason}}} ->
                    xmpp:make_error(IQ, xmpp:err_bad_request(Reason, Lang));
                {_Home, {error, Unanswered}} ->
                    ?WARNING_MSG("mod_cmr: ~ts", [Unanswered]),
                    xmpp:make_error(IQ, xmpp:err_internal_server_error(list_to_binary(Unanswered), Lang))
            end
    end.

disco_features({error, _} = Acc, _From, _To, _Node, _Lang) ->
    Acc;
disco_features(Acc, _From, #jid{lserver = S}, <<>>, _Lang) ->
    Existing = case Acc of {result, Present} -> Present; _ -> [] end,
    case mod_cmr_home:disco_features(S) of
        error -> Acc;
        Features -> {result, Features ++ Existing}
    end;
disco_features(Acc, _From, _To, _Node, _Lang) ->
    Acc.
