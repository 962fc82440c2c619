%%% mod_cmr_home: the home of an account's routing, on the node that
%%% mod_cmr_cluster makes the account's home.
%%%
%%% It owns this node's cmr router for the host, every call into the
%%% library, the table from session token to session process (its only
%%% writer) and the persisted algorithms (cmr_algorithm, written by the
%%% account's home). Calls go one way: mod_cmr (the hooks) and
%%% mod_cmr_cluster (the transport between nodes) call this module; it
%%% calls neither.
-module(mod_cmr_home).

-export([start/2, stop/1, running/1, activity_interval_ms/0, create_sessions_table/1, apply_event/2, forget/4,
         has_session/4, sessions/1, route/3, send_carbons/4, answer_iq/3, routing_command/3, admin_form/1, choice_note/3, choose_for/3,
         algorithm_for/2, local_stats/2, disco_features/1, metric_rows/1,
         metric_rows_example/0, metrics_doc/0]).

-include("xmpp.hrl").
-include("logger.hrl").

-define(NS_CMR, <<"urn:xmpp:cmr:0">>).

%% Replicated on every node that runs mod_cmr; written by the account's home.
-record(cmr_algorithm, {us :: {binary(), binary()}, algorithm :: binary()}).

%% A router with the policy in Options (the library's text; it validates it
%% and names the option it rejects).
-spec start(binary(), binary()) -> ok | {error, binary()}.
start(Host, Options) ->
    case cmr:new(Options) of
        {ok, Router} ->
            persistent_term:put({?MODULE, Host}, Router),
            %% The library's routing constants, read once.
            persistent_term:put({?MODULE, max_picks}, cmr:max_picks_per_message()),
            persistent_term:put({?MODULE, activity_interval_ms}, cmr:activity_interval_ms()),
            %% A node joining a cluster where the table exists gets a copy.
            ejabberd_mnesia:create(?MODULE, cmr_algorithm,
                                   [{disc_copies, [node()]}, {attributes, record_info(fields, cmr_algorithm)}]),
            ok;
        {error, {_, Reason}} ->
            {error, Reason}
    end.

stop(Host) ->
    persistent_term:erase({?MODULE, Host}),
    persistent_term:erase({?MODULE, failed, Host}),
    persistent_term:erase({?MODULE, sessions, Host}).

router(Host) -> persistent_term:get({?MODULE, Host}, undefined).

running(Host) -> router(Host) /= undefined.

%% A session's activity is reported at most once per this interval.
activity_interval_ms() -> persistent_term:get({?MODULE, activity_interval_ms}).

%%% Sessions

%% Token to session process, for the accounts homed here:
%% {{User, Server, Token}, Pid}. Made by the long-lived process that calls
%% this (mod_cmr_cluster's), which owns it; written here only.
create_sessions_table(Host) ->
    Name = gen_mod:get_module_proc(Host, cmr_sessions),
    ets:new(Name, [named_table, public, ordered_set, {read_concurrency, true}, {write_concurrency, true}]),
    persistent_term:put({?MODULE, sessions, Host}, Name).

sessions_table(Host) -> persistent_term:get({?MODULE, sessions, Host}).

has_session(Host, U, S, Token) -> ets:member(sessions_table(Host), {U, S, Token}).

%% The sessions homed here: [{U, S, Token, Pid}].
sessions(Host) -> [{U, S, Token, Pid} || {{U, S, Token}, Pid} <- ets:tab2list(sessions_table(Host))].

full_jid(U, S, R) -> jid:encode({U, S, R}).

%% A session event (see mod_cmr), applied to the library, and the session's
%% process kept beside its token for delivery.
apply_event(Host, Event) ->
    case router(Host) of
        undefined -> ok;
        Router -> apply_event(Host, Router, Event)
    end.

%% The account's persisted algorithm is applied when the library says a
%% register gave the account its first session (exactly one does, however
%% many sessions open at once).
apply_event(Host, Router, {register, U, S, R, Token, Pid, Priority, Show, Available}) ->
    ets:insert(sessions_table(Host), {{U, S, Token}, Pid}),
    case cmr:register(Router, full_jid(U, S, R), Token, Priority, Show, Available) of
        ok -> ok;
        new_account -> restore(Router, U, S);
        {error, Error} -> refused(S, Error, "not routing to ~ts", [full_jid(U, S, R)])
    end;
apply_event(Host, Router, {unregister, U, S, R, Token, _Pid}) ->
    ets:delete(sessions_table(Host), {U, S, Token}),
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
%% its account homed elsewhere now).
forget(Host, U, S, Token) ->
    remove(Host, U, S, Token, fun cmr:unregister/3).

%% Removes a session a pick chose and found gone; the library counts it.
gone(Host, U, S, Token) ->
    remove(Host, U, S, Token, fun cmr:session_gone/3).

remove(Host, U, S, Token, Remove) ->
    ets:delete(sessions_table(Host), {U, S, Token}),
    case router(Host) of
        undefined -> ok;
        Router -> Remove(Router, <<U/binary, "@", S/binary>>, Token)
    end.

restore(Router, U, S) ->
    case stored(U, S) of
        <<>> -> ok;
        Algorithm ->
            case cmr:set_algorithm(Router, <<U/binary, "@", S/binary>>, Algorithm) of
                ok -> ok;
                {error, Error} -> refused(S, Error, "stored algorithm of ~ts@~ts not restored", [U, S])
            end
    end.

%% The account's persisted choice (<<>> for none), and its writer.
stored(U, S) ->
    case mnesia:dirty_read(cmr_algorithm, {U, S}) of
        [#cmr_algorithm{algorithm = Algorithm}] -> Algorithm;
        [] -> <<>>
    end.

store(U, S, Algorithm) ->
    mnesia:dirty_write(#cmr_algorithm{us = {U, S}, algorithm = Algorithm}).

%% Fun(Router) with the host's router on this node, or the error of a node
%% where mod_cmr does not run for the host.
with_router(Host, Fun) ->
    case router(Host) of
        undefined -> not_running();
        Router -> Fun(Router)
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

%%% Routing

%% A message to a bare JID (or an offline full JID) of an account homed
%% here: delivered when sessions took it, or
%% not_routed when ejabberd routes it (the library left it to the server:
%% nothing eligible, or a type CMR does not route). BeforeRemote(Nodes) runs
%% before it is handed to sessions on other nodes, so that the transport
%% has journalled it before any of them can be lost with it.
-spec route(binary(), #message{}, fun(([node()]) -> ok)) -> delivered | not_routed.
route(Host, Msg, BeforeRemote) ->
    case router(Host) of
        undefined -> not_routed;
        Router -> route(Router, Msg, BeforeRemote, persistent_term:get({?MODULE, max_picks}))
    end.

route(_Router, _Msg, _BeforeRemote, 0) ->
    not_routed;
route(Router, #message{type = Type, from = From, to = #jid{luser = U, lserver = S}} = Msg, BeforeRemote, Picks) ->
    Hint = hint(Msg),
    Bare = <<U/binary, "@", S/binary>>,
    case cmr:pick(Router, Bare, atom_to_binary(Type), sender(From), Hint, is_local(From, Hint)) of
        Tokens when is_list(Tokens) ->
            Sessions = sessions_table(S),
            Picked = [{Token, Pid} || Token <- Tokens, {_, Pid} <- ets:lookup(Sessions, {U, S, Token})],
            Delivered = deliver(Msg, [Pid || {_, Pid} <- Picked], BeforeRemote),
            %% A picked session that is gone (unknown here, or its process
            %% or node down) leaves the library before the message is
            %% picked again.
            [gone(S, U, S, Token) || Token <- Tokens,
                                     not lists:any(fun({T, Pid}) -> T == Token andalso lists:member(Pid, Delivered) end,
                                                   Picked)],
            case Delivered of
                [] ->
                    route(Router, Msg, BeforeRemote, Picks - 1);
                _ ->
                    delivered
            end;
        not_routed ->
            not_routed;
        {error, Error} ->
            refused(S, Error, "not routing a message to ~ts", [Bare]),
            not_routed
    end.

%% The sender's bare JID, from its already normalized parts: sticky hashes
%% the bare JID only, and jid:encode/1 would prepare the strings again.
sender(undefined) -> <<>>;
sender(#jid{luser = <<>>, lserver = S}) -> S;
sender(#jid{luser = U, lserver = S}) -> <<U/binary, "@", S/binary>>.

%% Whether the sender is a user of this server matters for a hint only.
is_local(_From, <<>>) -> false;
is_local(undefined, _Hint) -> false;
is_local(#jid{lserver = S}, _Hint) -> lists:member(S, ejabberd_option:hosts()).

hint(#message{sub_els = Els}) ->
    case [A || #xmlel{name = <<"cmr">>, attrs = Attrs} <- Els,
               proplists:get_value(<<"xmlns">>, Attrs) == ?NS_CMR,
               A <- [proplists:get_value(<<"algorithm">>, Attrs, <<>>)]] of
        [Algorithm | _] -> Algorithm;
        [] -> <<>>
    end.

%% Delivers to each picked session's process and returns the pids that
%% took it: local ones alive, remote ones on a connected node.
deliver(Msg, Pids, BeforeRemote) ->
    case [Pid || Pid <- Pids, reachable(Pid)] of
        [] ->
            [];
        [First | Rest] = Live ->
            case lists:usort([node(Pid) || Pid <- Live]) -- [node()] of
                [] -> ok;
                Nodes -> BeforeRemote(Nodes)
            end,
            %% As ejabberd itself does, the first delivery is the original
            %% (mod_mam archives it) and the others are marked sm_copy. The
            %% original names the sessions that got it, for its carbons.
            ejabberd_c2s:route(First, {route, xmpp:put_meta(Msg, cmr_routed, Live)}),
            Rest /= [] andalso route_copies(xmpp:put_meta(Msg, sm_copy, true), Rest),
            Live
    end.

reachable(Pid) when node(Pid) == node() -> is_process_alive(Pid);
reachable(Pid) -> lists:member(node(Pid), nodes()).

route_copies(Copy, Pids) ->
    lists:foreach(fun(Pid) -> ejabberd_c2s:route(Pid, {route, Copy}) end, Pids).

%% The picked sessions (the pids in Delivered) got the message; every other
%% available, carbons-enabled session gets a <received/> copy, by XEP-0280's
%% rule (should_copy/1). Run by the session that got the original, as
%% mod_carboncopy is: after ejabberd's privacy check let it in.
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

%%% XEP-0354 IQs, disco, stats and metrics

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

%% The routing command (XEP-0050) for the session From, as the library runs
%% it: {form, Xml}, {completed, Note} (a change persisted, as after an IQ),
%% {refused, Note}, or {error, {Status, Why}}.
routing_command(Host, From, Submitted) ->
    with_router(Host, fun(Router) ->
        case cmr:routing_command(Router, jid:encode(From), Submitted) of
            {completed, Note, Changed} ->
                Changed andalso persist(Router, From),
                {completed, Note};
            {error, {panic, _} = Error} ->
                refused(Host, Error, "", []),
                {error, Error};
            Answer ->
                Answer
        end
    end).

%% The admin command's form, from any node's library.
admin_form(Host) ->
    with_router(Host, fun cmr:admin_form/1).

%% The admin command's note of a choice made, in the routing command's
%% words (this node's library: it holds no state).
choice_note(Host, Bare, Uri) ->
    with_router(Host, fun(Router) -> cmr:choice_note(Router, Bare, Uri) end).

%% An operator's choice of Algorithm for the account U of Host, homed here:
%% applied at once if it is online, and stored for its next first session.
%% {ok, Uri} or {error, {Status, Why}}, nothing changed.
choose_for(Host, U, Algorithm) ->
    with_router(Host, fun(Router) ->
        Bare = <<U/binary, "@", Host/binary>>,
        case cmr:choose_for(Router, Bare, Algorithm) of
            {ok, Uri} ->
                store(U, Host, Uri),
                %% A first session that registered meanwhile restored the
                %% choice stored before: it gets this one too.
                cmr:set_algorithm(Router, Bare, Uri),
                {ok, Uri};
            Error ->
                Error
        end
    end).

%% The algorithm that applies to the account U of Host, homed here: its
%% sessions', else its stored choice (if still offered), else the default.
algorithm_for(Host, U) ->
    with_router(Host, fun(Router) ->
        cmr:algorithm_for(Router, <<U/binary, "@", Host/binary>>, stored(U, Host))
    end).

not_running() ->
    {error, {not_running, iolist_to_binary(["mod_cmr is not running on ", atom_to_binary(node())])}}.

persist(Router, #jid{luser = U, lserver = S}) ->
    case cmr:get_algorithm(Router, <<U/binary, "@", S/binary>>) of
        {ok, Algorithm} -> store(U, S, Algorithm);
        {error, Error} -> refused(S, Error, "the choice of ~ts@~ts is not stored", [U, S])
    end.

%% The features to advertise, or error.
disco_features(Host) ->
    case router(Host) of
        undefined -> error;
        Router ->
            case cmr:disco_features(Router) of
                {ok, Text} -> binary:split(Text, <<"\n">>, [global]);
                {error, Error} -> refused(Host, Error, "disco features not given", []), error
            end
    end.

local_stats(Host, Jid) ->
    #jid{luser = U, lserver = S} = jid:decode(Jid),
    case router(Host) of
        undefined -> {error, "mod_cmr is not loaded on " ++ atom_to_list(node())};
        Router ->
            case {cmr:get_algorithm(Router, Jid), cmr:stats(Router, Jid)} of
                {{ok, Algorithm}, {ok, Table}} ->
                    [Header | Rows] = binary:split(Table, <<"\n">>, [global, trim]),
                    Columns = binary:split(Header, <<"\t">>, [global]),
                    TokenAt = length(lists:takewhile(fun(C) -> C =/= <<"token">> end, Columns)) + 1,
                    Lines = [<<Header/binary, "\tnode">> | [<<Row/binary, "\t", (session_node(Host, U, S, TokenAt, Row))/binary>>
                                                           || Row <- Rows]],
                    {ok, iolist_to_binary([<<"algorithm\t">>, Algorithm, <<"\n">>, lists:join(<<"\n">>, Lines), <<"\n">>])};
                {{error, {_, Reason}}, _} -> {error, binary_to_list(Reason)};
                {_, {error, {_, Reason}}} -> {error, binary_to_list(Reason)}
            end
    end.

%% The node of the session in a stats row, whose column TokenAt (found by
%% its name in the header) is its token.
session_node(Host, U, S, TokenAt, Row) ->
    Token = binary_to_integer(lists:nth(TokenAt, binary:split(Row, <<"\t">>, [global]))),
    case ets:lookup(sessions_table(Host), {U, S, Token}) of
        [{_, Pid}] -> atom_to_binary(node(Pid));
        [] -> <<"?">>
    end.

%% The library's series as served by the cmr_metrics command:
%% {Metric, Algorithm, Type} per series, in the library's order.
served_series() ->
    [{Metric, case Label of <<"algorithm">> -> Value; _ -> <<>> end, atom_to_binary(Kind)}
     || #{metric := Metric, label := Label, label_value := Value, kind := Kind} <- cmr:metric_series()].

%% This node's figures for the host, read from its library now: one
%% {Name, Algorithm, Type, Value} row per series, each metric's rows
%% together (in the library's order of metrics) and sorted by algorithm.
metric_rows(Host) ->
    case router(Host) of
        undefined ->
            {error, not_exists, 1, lists:flatten(io_lib:format("mod_cmr is not running for ~ts on ~ts", [Host, node()]))};
        Router ->
            case cmr:metric_values(Router) of
                {ok, Values} ->
                    Series = served_series(),
                    Metrics = metrics_in_order(Series),
                    Rank = maps:from_list(lists:zip(Metrics, lists:seq(1, length(Metrics)))),
                    Rows = lists:zipwith(fun({Metric, Algorithm, Type}, Value) -> {Metric, Algorithm, Type, Value} end,
                                         Series, Values),
                    [Row || {_, _, Row} <- lists:sort([{maps:get(M, Rank), A, R} || {M, A, _, _} = R <- Rows])];
                {error, {_, Reason}} ->
                    {error, internal_error, 1, binary_to_list(Reason)}
            end
    end.

%% Two rows as metric_rows/1 gives them: the library's first series and its
%% last, with made-up values.
metric_rows_example() ->
    Series = served_series(),
    [{Metric, Algorithm, Type, Value} || {{Metric, Algorithm, Type}, Value} <- [{hd(Series), 30}, {lists:last(Series), 5}]].

%% Each metric once, in the order of its first series.
metrics_in_order(Series) ->
    lists:foldr(fun({Metric, _, _}, Acc) -> [Metric | Acc -- [Metric]] end, [], Series).

%% The cmr_metrics command's long description: each metric's name, type
%% and the library's help for it.
metrics_doc() ->
    Series = cmr:metric_series(),
    lists:flatten(
      ["The figures of this node's mod_cmr library for the virtual host, read when asked (in a cluster, "
       "each node answers for the accounts homed there). Counters count from mod_cmr's start on the host "
       "(a restart or reload of the module starts them again); a message picked again after a gone "
       "session counts once per pick. ",
       [io_lib:format("`~ts` (~ts): ~ts. ", [Metric, Kind, Help])
        || Metric <- metrics_in_order(served_series()),
           #{kind := Kind, help := Help} <- [hd([S || #{metric := M} = S <- Series, M == Metric])]]]).
