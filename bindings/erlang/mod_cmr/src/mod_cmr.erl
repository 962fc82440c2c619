%%% mod_cmr: XEP-0354 Customizable Message Routing for ejabberd.
%%%
%%% The routing decisions live in the cmr library (through the cmr NIF
%%% module). This module holds what ejabberd calls: gen_mod, the hooks, the
%%% IQ handler, disco, the ad-hoc commands and the ejabberd commands. It
%%% feeds the library the sessions' presence, activity and XEP-0198 load,
%%% hands it every message to a bare JID (or to an offline full JID), which
%%% it delivers to the sessions the library picks with `to` untouched, and
%%% answers XEP-0354 IQs and the routing commands through it.
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
         decode_iq_subel/1, disco_features/5, adhoc_local_items/4, adhoc_local_commands/4,
         get_commands_spec/0, stats/1, metrics/1, get_algorithm/2, set_algorithm/3]).

-include("xmpp.hrl").
-include("logger.hrl").
-include("ejabberd_commands.hrl").

-define(NS_CMR, <<"urn:xmpp:cmr:0">>).

%%% gen_mod

start(Host, Opts) ->
    case mod_cmr_home:start(Host, options_text(Opts)) of
        ok ->
            ok = mod_cmr_cluster:start(Host, gen_mod:get_opt(max_journal_size, Opts)),
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
            %% and mod_carboncopy (89), which must not copy what mod_cmr routed;
            %% after the session's privacy check (XEP-0016, XEP-0191), which
            %% drops a blocked sender's message before any hook.
            ejabberd_hooks:add(user_receive_packet, Host, ?MODULE, user_receive_packet, 88.5),
            %% After mod_mam (50), so each message is archived once.
            ejabberd_hooks:add(sm_receive_packet, Host, ?MODULE, sm_receive_packet, 100),
            ejabberd_hooks:add(disco_local_features, Host, ?MODULE, disco_features, 50),
            ejabberd_hooks:add(disco_sm_features, Host, ?MODULE, disco_features, 50),
            %% mod_adhoc lists and runs them; mod_configure's are at 50 too.
            ejabberd_hooks:add(adhoc_local_items, Host, ?MODULE, adhoc_local_items, 50),
            ejabberd_hooks:add(adhoc_local_commands, Host, ?MODULE, adhoc_local_commands, 50),
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
    ejabberd_hooks:delete(adhoc_local_commands, Host, ?MODULE, adhoc_local_commands, 50),
    ejabberd_hooks:delete(adhoc_local_items, Host, ?MODULE, adhoc_local_items, 50),
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

%% The ad-hoc commands need mod_adhoc; routing does not.
depends(_Host, _Opts) -> [{mod_adhoc, soft}].

mod_opt_type(offered) -> econf:list(econf:binary());
mod_opt_type(default) -> econf:binary();
mod_opt_type(user_change) -> econf:bool();
mod_opt_type(hints) -> econf:binary();
mod_opt_type(prefix) -> econf:binary();
mod_opt_type(max_journal_size) -> econf:pos_int().

%% An option of the library that the operator does not set is not passed
%% to it, and its default applies (see the cmr README). max_journal_size is
%% the cluster transport's (mod_cmr_cluster): 32 MiB hold some 85,000 short
%% chat messages, two to three seconds of 30,000 forwarded a second.
mod_options(_Host) ->
    [{Option, undefined} || Option <- [offered, default, user_change, hints, prefix]]
        ++ [{max_journal_size, 32 * 1024 * 1024}].

mod_doc() ->
    #{desc => ["XEP-0354 Customizable Message Routing: the account chooses how "
               "messages to its bare JID are spread over its sessions. An option "
               "left out takes the cmr library's default.",
               "With mod_adhoc, users choose through an ad-hoc command, and who passes the host's "
               "configure access sets any account's through another; operators use the "
               "cmr_get_algorithm and cmr_set_algorithm commands (ejabberdctl, ReST API)."],
      opts => [{offered, #{value => "[Algorithm]",
                           desc => "Algorithms users may choose, by short name or URI; "
                                   "must include all or mostactive. The library's default (also that of an empty list) offers all seven."}},
               {default, #{value => "Algorithm",
                           desc => "The algorithm of an account that has not chosen. The library's default is all."}},
               {user_change, #{value => "true | false",
                               desc => "Whether users may change it. The library's default is true."}},
               {hints, #{value => "any | local | never",
                         desc => "Whose message hints are honoured. The library's default is local."}},
               {prefix, #{value => "URI", desc => "URI prefix of the algorithms beyond XEP-0354."}},
               {max_journal_size,
                #{value => "Size",
                  desc => "In a cluster: the most bytes of memory that the journal may hold, the messages this "
                          "node handed to another node (forwarded to an account's home, or delivered to a session "
                          "there) in the last two seconds or so, kept to be routed again if that node is lost. A full "
                          "journal keeps no more: the messages still go out, but one that a lost node took with "
                          "it is not routed again (it is lost, where a replay would have delivered it at least "
                          "once). Each is counted (cmr_cluster_journal_overflow_total in cmr_metrics), and a "
                          "warning says so at most every 10 seconds. What counts is the journal's table and "
                          "each message kept encoded (a short chat message takes about 400 bytes). The default, "
                          "32 MiB, holds some 85,000 of them: the two to three seconds that the journal keeps "
                          "at 30,000 forwarded messages a second."}}]}.

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

%% After mod_mam archived the original of a message mod_cmr routed: its
%% carbons to the sessions that did not get it, then the mark sm_copy, so
%% that mod_carboncopy leaves the copies to mod_cmr. A message the session's
%% privacy list blocks never gets here, nor are its carbons sent.
user_receive_packet({#message{meta = #{cmr_routed := Delivered}} = Msg,
                     #{jid := #jid{luser = U, lserver = S}} = State}) ->
    mod_cmr_home:send_carbons(Msg, U, S, Delivered),
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
                        longdesc = mod_cmr_home:metrics_doc() ++ mod_cmr_cluster:metrics_doc(),
                        policy = admin,
                        module = ?MODULE, function = metrics,
                        args = [{host, binary}],
                        args_desc = ["Virtual host"],
                        args_example = [<<"example.org">>],
                        result = {metrics, {list, {metric, {tuple, [{name, string}, {algorithm, string},
                                                                    {type, string}, {value, integer}]}}}},
                        result_desc = "One metric per line: name, algorithm (empty when the metric has none), "
                                      "type (counter or gauge), value",
                        result_example = mod_cmr_home:metric_rows_example()},
     #ejabberd_commands{name = cmr_get_algorithm, tags = [session],
                        desc = "Get the message routing (XEP-0354 algorithm) that applies to an account",
                        longdesc = "The algorithm of the account's sessions when it is online; else its stored "
                                   "choice, if the host still offers it; else the host's default. Asked on any "
                                   "node, answered by the account's home.",
                        policy = admin,
                        module = ?MODULE, function = get_algorithm,
                        args = [{user, binary}, {host, binary}],
                        args_desc = ["Username", "Virtual host"],
                        args_example = [<<"sensors">>, <<"example.org">>],
                        result = {algorithm, string},
                        result_desc = "The algorithm's URI",
                        result_example = "urn:xmpp:cmr:roundrobin"},
     #ejabberd_commands{name = cmr_set_algorithm, tags = [session],
                        desc = "Set an account's message routing (XEP-0354 algorithm)",
                        longdesc = "As the account's own choice, stored and kept across its sessions: at once "
                                   "when it is online, else at its next login. Not bound by user_change, "
                                   "which limits users only; an algorithm the host does not offer is refused. "
                                   "Run on any node, applied and stored by the account's home.",
                        policy = admin,
                        module = ?MODULE, function = set_algorithm,
                        args = [{user, binary}, {host, binary}, {algorithm, binary}],
                        args_desc = ["Username", "Virtual host", "Algorithm, by short name or URI"],
                        args_example = [<<"sensors">>, <<"example.org">>, <<"roundrobin">>],
                        result = {res, restuple},
                        result_desc = "The URI of the algorithm set",
                        result_example = {ok, "urn:xmpp:cmr:roundrobin"}}].

%% This node's figures for the host, read from its library now, then the
%% cluster transport's own.
metrics(Host) ->
    case mod_cmr_home:metric_rows(Host) of
        Rows when is_list(Rows) -> Rows ++ mod_cmr_cluster:metric_rows(Host);
        Error -> Error
    end.

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

%% The operators' tools: an account's algorithm, got and set on any node.
%% Refused input is an error that names it ({error, Kind, 1, Message}:
%% ejabberdctl exits with 1, the ReST API answers 404 for an unknown host
%% or account, 500 otherwise), and nothing changes.
get_algorithm(User, Host) ->
    tool_result(tool_account(User, Host, fun(S, U) -> mod_cmr_cluster:call_home(S, U, algorithm_for, [S, U]) end)).

set_algorithm(User, Host, Algorithm) ->
    case tool_result(tool_account(User, Host, fun(S, U) -> choose_for(S, U, Algorithm) end)) of
        {error, _, _, _} = Error -> Error;
        Uri -> {ok, Uri}
    end.

%% Fun(Host, User) for the account User@Host, once it is one by ejabberd's
%% rules, on a host that runs mod_cmr here.
tool_account(User, Host, Fun) ->
    Jid = <<User/binary, "@", Host/binary>>,
    case jid_of(Jid) of
        #jid{lserver = S} ->
            case mod_cmr_home:running(S) of
                true -> with_account(S, Jid, Fun);
                false -> {error, not_exists,
                          io_lib:format("mod_cmr is not running for ~ts (of ~ts) on this node", [S, Jid])}
            end;
        error ->
            {error, invalid_jid, io_lib:format("'~ts' is not a valid JID", [Jid])}
    end.

%% The messages as UTF-8 bytes: ejabberdctl prints them with ~s, the ReST
%% API makes a binary of them.
tool_result({_Home, {ok, Uri}}) -> binary_to_list(Uri);
tool_result({error, Kind, Why}) -> {error, Kind, 1, binary_to_list(unicode:characters_to_binary(Why))};
tool_result({_Home, {error, {Status, Why}}}) -> {error, Status, 1, binary_to_list(Why)};
tool_result({_Home, {error, Unanswered}}) -> {error, internal_error, 1, Unanswered}.

%% Fun(Host, User) for the account Jid (text) of Host, once it is one by
%% ejabberd's rules: a valid bare JID, of Host, registered. Else {error,
%% Kind, Why}, naming it.
with_account(Host, Jid, Fun) ->
    case jid_of(Jid) of
        error ->
            {error, invalid_jid, io_lib:format("'~ts' is not a valid JID", [Jid])};
        #jid{lserver = S} when S /= Host ->
            {error, not_exists, io_lib:format("'~ts' is not an account of ~ts", [Jid, Host])};
        #jid{luser = U, lresource = R} when U == <<>>; R /= <<>> ->
            {error, invalid_jid, io_lib:format("'~ts' is not an account's bare JID", [Jid])};
        #jid{luser = U} ->
            case ejabberd_auth:user_exists(U, Host) of
                true -> Fun(Host, U);
                false -> {error, not_exists, io_lib:format("there is no account '~ts'", [Jid])}
            end
    end.

jid_of(Text) ->
    try jid:decode(Text)
    catch error:{bad_jid, _} -> error
    end.

%% An operator's choice for an account (the admin command's, the set tool's),
%% applied and stored by the account's home.
choose_for(Host, U, Algorithm) ->
    mod_cmr_cluster:call_home(Host, U, choose_for, [Host, U, Algorithm]).

%%% Ad-hoc commands (XEP-0050, run by mod_adhoc): the routing command for
%%% the host's users, the admin command for who passes the host's
%%% `configure' access, as mod_configure's. The library builds the forms,
%%% checks what comes back and words the answers.

adhoc_local_items({error, _} = Acc, _From, _To, _Lang) ->
    Acc;
adhoc_local_items(Acc, From, #jid{lserver = S} = To, _Lang) ->
    case mod_cmr_home:running(S) of
        false -> Acc;
        true ->
            Items = case Acc of {result, Listed} -> Listed; _ -> [] end,
            Mine = [#disco_item{jid = jid:make(To#jid.server), node = Node, name = Name}
                    || #{node := Node, name := Name} <- [cmr:routing_command() || is_user(From, S)]
                           ++ [cmr:admin_command() || is_admin(From, S)]],
            {result, Items ++ Mine}
    end.

is_user(#jid{luser = U, lserver = S}, S) -> U /= <<>>;
is_user(_From, _S) -> false.

is_admin(From, S) -> acl:match_rule(S, configure, From) == allow.

adhoc_local_commands(Acc, From, #jid{lserver = S}, #adhoc_command{node = Node} = Request) ->
    #{node := Routing} = cmr:routing_command(),
    #{node := Admin} = cmr:admin_command(),
    case mod_cmr_home:running(S) of
        true when Node == Routing ->
            adhoc(Request, is_user(From, S), fun(Submitted) -> routing_command(From, S, Submitted) end);
        true when Node == Admin ->
            adhoc(Request, is_admin(From, S), fun(Submitted) -> admin_command(S, Submitted) end);
        _ ->
            Acc
    end.

%% One stage of a command: Run(Submitted) with the submitted form as text
%% (<<>> at the first stage) gives {form, Xml}, {completed, Note},
%% {refused, Note} or {error, StanzaError}.
adhoc(#adhoc_command{lang = Lang}, false, _Run) ->
    {error, xmpp:err_forbidden(<<"Access denied by service policy">>, Lang)};
adhoc(#adhoc_command{action = cancel, lang = Lang, node = Node, sid = Sid}, true, _Run) ->
    #adhoc_command{status = canceled, lang = Lang, node = Node, sid = Sid};
adhoc(#adhoc_command{action = Action, xdata = XData, lang = Lang} = Request, true, Run)
  when Action == execute; Action == complete ->
    Submitted = case XData of
                    undefined -> <<>>;
                    _ -> fxml:element_to_binary(xmpp:encode(XData))
                end,
    case Run(Submitted) of
        {form, Xml} ->
            Form = xmpp:decode(fxml_stream:parse_element(Xml)),
            xmpp_util:make_adhoc_response(Request, #adhoc_command{status = executing, xdata = Form,
                                                                  actions = #adhoc_actions{execute = complete,
                                                                                           complete = true}});
        {completed, Note} ->
            completed(Request, info, Note);
        {refused, Note} ->
            completed(Request, error, Note);
        {error, {bad_request, Why}} ->
            {error, xmpp:err_bad_request(Why, Lang)};
        {error, internal} ->
            {error, xmpp:err_internal_server_error()}
    end;
adhoc(#adhoc_command{lang = Lang}, true, _Run) ->
    {error, xmpp:err_bad_request(<<"Unexpected action">>, Lang)}.

completed(Request, Type, Note) ->
    xmpp_util:make_adhoc_response(Request, #adhoc_command{status = completed,
                                                          notes = [#adhoc_note{type = Type, data = Note}]}).

%% The routing command runs on the account's home, which persists a change.
routing_command(#jid{luser = U} = From, S, Submitted) ->
    case mod_cmr_cluster:call_home(S, U, routing_command, [S, From, Submitted]) of
        {_Home, {error, _} = Error} -> library_error(Error);
        {_Home, Answer} -> Answer
    end.

%% The admin command: its form from this node's library, the submitted
%% account checked here by ejabberd's rules, the choice made by the
%% account's home.
admin_command(S, <<>>) ->
    case mod_cmr_home:admin_form(S) of
        {ok, Form} -> {form, Form};
        Error -> library_error(Error)
    end;
admin_command(S, Submitted) ->
    case {cmr:admin_form_value(Submitted, <<"accountjid">>), cmr:admin_form_value(Submitted, <<"algorithm">>)} of
        {{ok, Jid}, {ok, Algorithm}} ->
            case with_account(S, Jid, fun(Host, U) -> choose_for(Host, U, Algorithm) end) of
                {_Home, {ok, Uri}} ->
                    case mod_cmr_home:choice_note(S, Jid, Uri) of
                        {ok, Note} -> {completed, Note};
                        Error -> library_error(Error)
                    end;
                {error, _Kind, Why} ->
                    {refused, unicode:characters_to_binary(Why)};
                {_Home, {error, {Status, Why}}} when Status == unknown_algorithm; Status == not_offered ->
                    {refused, Why};
                {_Home, Error} ->
                    library_error(Error)
            end;
        {{error, _} = Error, _} -> library_error(Error);
        {_, Error} -> library_error(Error)
    end.

%% What the library (or the account's home) refused, as the command's
%% stanza error: a form that is not the command's is a bad request, as is
%% anything the library names; a home that does not answer, or a library
%% that failed, an internal error.
library_error({error, {panic, _}}) ->
    {error, internal};
library_error({error, {_Status, Why}}) ->
    {error, {bad_request, Why}};
library_error({error, Unanswered}) ->
    ?WARNING_MSG("mod_cmr: ~ts", [Unanswered]),
    {error, internal}.

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
