%%% mod_cmr_cluster: one routing decision per account across an ejabberd
%%% cluster.
%%%
%%% Each account has one home: the node chosen by rendezvous hashing of its
%%% bare JID over the nodes that run mod_cmr for the host (a `pg' group, so
%%% a node that stops mod_cmr, or dies, leaves it). The home's library holds
%%% all of the account's sessions: the other nodes send it their sessions'
%%% events and forward it the account's messages. This process (one per host
%%% and node) is both ends of that traffic:
%%%  - as a home, it applies remote sessions' events, monitors those
%%%    sessions, routes forwarded messages and acknowledges them;
%%%  - as a forwarder, it keeps each forwarded message until its home
%%%    acknowledges it, and has ejabberd route it when the home goes away or
%%%    does not answer in time;
%%%  - on either side, what was handed to another node (forwarded, or
%%%    delivered to a session there) is kept in a journal for a moment;
%%%  - on a membership change, it drops the accounts homed elsewhere now and
%%%    the sessions of nodes that left, has this node's sessions register
%%%    again with their (maybe new) homes, and routes again what the
%%%    journal holds for a lost node.
%%%
%%% Calls go one way: mod_cmr (the hooks) calls this module, which calls
%%% mod_cmr_home (the library, on the account's home node); neither of them
%%% calls back. This process owns the home's session table (made by
%%% mod_cmr_home, which alone writes it) and the journal (written here only).
-module(mod_cmr_cluster).
-behaviour(gen_server).

-export([start/1, stop/1, home/2, send_event/3, route/2, call_home/4, token/2, register_existing_sessions/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include("logger.hrl").
-include("xmpp.hrl").

-define(SCOPE, mod_cmr_pg).
%% A forward the home has not acknowledged within this is routed by
%% ejabberd (the home is stuck; one that dies is noticed at once).
-define(ACK_TIMEOUT_MS, 5000).
%% What was delivered to a node this recently before it was lost is routed
%% again: it may have died in that node's queues (duplicates over loss).
-define(REPLAY_WINDOW_MS, 2000).
-define(TICK_MS, 1000).
%% A home acknowledges at least this often under a steady stream.
-define(ACK_EVERY, 64).
-define(NODE_INDEXES, 4096).
%% Nesting beyond which a message is not routed again (see replayable/1).
-define(MAX_REPLAY_DEPTH, 1000).
%% How long nodes must stay outsiders before that is logged: a node that
%% joins the cluster starts mod_cmr a few seconds after Mnesia.
-define(OUTSIDERS_LOG_DELAY_MS, 15000).
%% How long a node waits for an account's home to answer an IQ or a stats
%% query.
-define(HOME_TIMEOUT_MS, 5000).

%% Each node's number in the cluster, unique among the nodes of Mnesia's
%% schema: it sets apart the session tokens of different nodes (ejabberd's
%% SIDs are unique on their node only).
-record(cmr_node, {node :: node(), index :: 0..?NODE_INDEXES - 1}).

-record(state, {host :: binary(),
                members = [] :: [node()],
                %% Nodes of the cluster that do not run mod_cmr for the host.
                outsiders = [] :: [node()],
                %% The outsiders last logged: they are logged once they last
                %% a tick, as a node joining the cluster starts mod_cmr a
                %% moment after Mnesia.
                logged_outsiders = [] :: [node()],
                outsiders_since :: integer() | undefined,
                pg_ref :: reference(),
                seq = 0 :: non_neg_integer(),
                %% Forwarder: per home, {Seq, SentAt, Message} in order, and
                %% the monitor of each home's process.
                pending = #{} :: #{node() => queue:queue()},
                homes = #{} :: #{node() => reference()},
                %% Home: the highest sequence number routed per forwarder,
                %% not yet acknowledged.
                unacked = #{} :: #{pid() => non_neg_integer()},
                %% Home: monitored sessions of other nodes.
                remote = #{} :: #{pid() => {reference(), binary(), binary(), non_neg_integer()}}}).

%%% API

start(Host) ->
    case gen_mod:start_child(?MODULE, Host, []) of
        {ok, _} -> ok;
        {error, Reason} -> {error, Reason}
    end.

stop(Host) ->
    gen_mod:stop_child(?MODULE, Host),
    persistent_term:erase({?MODULE, Host}),
    persistent_term:erase({?MODULE, outsiders, Host}),
    persistent_term:erase({?MODULE, names, Host}).

%% The names of this process and of its journal, made once per host (a
%% name is an atom made from the host, and both are needed per message).
names(Host) ->
    {gen_mod:get_module_proc(Host, ?MODULE), gen_mod:get_module_proc(Host, cmr_journal)}.

proc(Host) -> element(1, persistent_term:get({?MODULE, names, Host})).

%% The home of the account U on Host: with one node running mod_cmr (or
%% while this process starts), this node.
-spec home(binary(), binary()) -> node().
home(Host, U) ->
    case persistent_term:get({?MODULE, Host}, []) of
        [] -> node();
        Nodes -> home_among(Nodes, U, Host)
    end.

%% Rendezvous hashing: each account goes to the node that scores it
%% highest, so a node that leaves moves only its own accounts.
home_among([Node], _U, _S) ->
    Node;
home_among(Nodes, U, S) ->
    {_, Home} = lists:max([{erlang:phash2({Node, U, S}), Node} || Node <- Nodes]),
    Home.

%% The nodes of the cluster that run no mod_cmr for the host (in a rolling
%% upgrade): accounts with a session there are left to ejabberd.
outsiders(Host) ->
    persistent_term:get({?MODULE, outsiders, Host}, []).

%% A message to a bare JID (or an offline full JID) of the host: routed by
%% the library of the account's home, here or on the node it is forwarded
%% to (this node's process keeps it until the home acknowledges it).
%% Returns {stop, drop} when it is CMR's, or the message for ejabberd.
route(Host, #message{to = #jid{luser = U}} = Msg) ->
    case home(Host, U) of
        Home when Home == node() ->
            route_here(Host, Msg);
        Home ->
            proc(Host) ! {forward, Home, Msg},
            {stop, drop}
    end.

%% On the account's home. An account with a session on a cluster node that
%% runs no mod_cmr (a rolling upgrade) is left to ejabberd: no library sees
%% that session.
route_here(Host, #message{to = #jid{luser = U}} = Msg) ->
    Outsiders = outsiders(Host),
    case Outsiders /= [] andalso
        lists:any(fun({_, Pid}) -> lists:member(node(Pid), Outsiders) end, ejabberd_sm:get_session_sids(U, Host)) of
        true -> Msg;
        false ->
            %% What is handed to another node is kept a moment, in case
            %% that node dies with it.
            case mod_cmr_home:route(Host, Msg, fun(Nodes) -> journal(Host, Nodes, Msg) end) of
                delivered ->
                    {stop, drop};
                not_routed ->
                    Msg
            end
    end.

%% On the account's home, a message another node forwarded: routed here,
%% or by ejabberd when the library leaves it to the server.
route_forwarded(Host, Msg) ->
    case route_here(Host, Msg) of
        {stop, drop} -> ok;
        Unrouted -> route_natively(Unrouted)
    end.

%% ejabberd's own routing, from the session manager on (mod_cmr passes it).
route_natively(Msg) ->
    ejabberd_sm:route(xmpp:put_meta(Msg, cmr_native, true)).

%% A session event (see mod_cmr) for the library of the home of the
%% account U: applied here, or sent to the home node's process.
send_event(Host, U, Event) ->
    case home(Host, U) of
        Home when Home == node() -> mod_cmr_home:apply_event(Host, Event);
        Home -> {proc(Host), Home} ! {cmr_event, Event}, ok
    end.

%% Runs mod_cmr_home:Function(Args) on the home of the account U:
%% {Home, Result}, Result {error, Reason} when that node did not answer.
call_home(Host, U, Function, Args) ->
    Home = home(Host, U),
    {Home, case Home == node() of
               true -> apply(mod_cmr_home, Function, Args);
               false ->
                   try erpc:call(Home, mod_cmr_home, Function, Args, ?HOME_TIMEOUT_MS)
                   catch Class:Reason ->
                           {error, lists:flatten(io_lib:format("the account's home node ~ts did not answer: ~p:~p",
                                                               [Home, Class, Reason]))}
                   end
           end}.

%% This node's sessions, when the module starts and whenever the nodes
%% running it change: each registers itself (with its account's home) from
%% its own state (its last presence, and whether it waits for resumption),
%% in its own process (mod_cmr's c2s_handle_cast hook), so that nothing
%% here waits on any of them.
register_existing_sessions(Host) ->
    lists:foreach(
      fun({U, S, R}) ->
              case ejabberd_sm:get_session_pid(U, S, R) of
                  Pid when is_pid(Pid), node(Pid) == node() -> xmpp_stream_in:cast(Pid, cmr_register);
                  _ -> ok
              end
      end, ejabberd_sm:get_vh_session_list(Host)).

journal_table(Host) -> element(2, persistent_term:get({?MODULE, names, Host})).

%% Records that Msg was handed to Nodes (other nodes than this one), for a
%% replay if one of them is lost.
journal(Host, Nodes, Msg) ->
    Now = erlang:monotonic_time(millisecond),
    ets:insert(journal_table(Host), [{{Node, Now, erlang:unique_integer()}, Msg} || Node <- Nodes]),
    ok.

%% A session's token: its SID's timestamp, unique on its node (ejabberd
%% makes SIDs unique there), with the node's number above it, so that
%% tokens are unique across the cluster. undefined for a node that has no
%% number (it never ran mod_cmr).
-spec token(node(), erlang:timestamp()) -> non_neg_integer() | undefined.
token(Node, {Mega, Sec, Micro}) ->
    case node_index(Node) of
        undefined -> undefined;
        Index -> (Index bsl 52) bor ((Mega * 1000000 + Sec) * 1000000 + Micro)
    end.

node_index(Node) when Node == node() ->
    persistent_term:get({?MODULE, node_index});
node_index(Node) ->
    case mnesia:dirty_read(cmr_node, Node) of
        [#cmr_node{index = Index}] -> Index;
        [] -> undefined
    end.

%% Claims this node's number: its own if it has one, else the lowest that
%% no node of the schema holds (a node that left the cluster gives its up).
claim_node_index() ->
    ejabberd_mnesia:create(?MODULE, cmr_node, [{disc_copies, [node()]}, {attributes, record_info(fields, cmr_node)}]),
    Claim = fun() ->
                    mnesia:lock({table, cmr_node}, write),
                    case mnesia:read(cmr_node, node()) of
                        [#cmr_node{index = Index}] ->
                            Index;
                        [] ->
                            Schema = mnesia:system_info(db_nodes),
                            Claims = mnesia:match_object(#cmr_node{_ = '_'}),
                            [mnesia:delete_object(C) || #cmr_node{node = N} = C <- Claims, not lists:member(N, Schema)],
                            Taken = [I || #cmr_node{node = N, index = I} <- Claims, lists:member(N, Schema)],
                            [Index | _] = lists:seq(0, ?NODE_INDEXES - 1) -- Taken,
                            mnesia:write(#cmr_node{node = node(), index = Index}),
                            Index
                    end
            end,
    {atomic, Index} = mnesia:transaction(Claim),
    persistent_term:put({?MODULE, node_index}, Index).

%%% gen_server

init([Host, _Opts]) ->
    claim_node_index(),
    persistent_term:put({?MODULE, names, Host}, names(Host)),
    mod_cmr_home:create_sessions_table(Host),
    ets:new(journal_table(Host), [named_table, public, ordered_set, {write_concurrency, true}]),
    case pg:start(?SCOPE) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok
    end,
    ok = pg:join(?SCOPE, Host, self()),
    {Ref, _} = pg:monitor(?SCOPE, Host),
    Members = members(Host),
    persistent_term:put({?MODULE, Host}, Members),
    %% Mnesia says when a node joins the cluster or leaves it.
    {ok, _} = mnesia:subscribe(system),
    timer:send_interval(?TICK_MS, tick),
    {ok, update_outsiders(#state{host = Host, members = Members, pg_ref = Ref})}.

handle_call(_Request, _From, State) ->
    {reply, {error, badarg}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% Forwarder side.
handle_info({forward, Home, Msg}, #state{seq = Seq0, pending = Pending} = State0) ->
    Seq = Seq0 + 1,
    State = watch(Home, State0),
    Host = State#state.host,
    {proc(Host), Home} ! {cmr_route, self(), Seq, Msg},
    %% Acknowledged means routed, not received: the home may die with it in
    %% its sessions' queues.
    journal(Host, [Home], Msg),
    Queue = maps:get(Home, Pending, queue:new()),
    Sent = {Seq, erlang:monotonic_time(millisecond), Msg},
    {noreply, State#state{seq = Seq, pending = Pending#{Home => queue:in(Sent, Queue)}}};
handle_info({cmr_ack, Home, Seq}, #state{pending = Pending} = State) ->
    case Pending of
        #{Home := Queue} -> {noreply, State#state{pending = Pending#{Home => acknowledged(Seq, Queue)}}};
        _ -> {noreply, State}
    end;
%% Home side.
handle_info({cmr_route, From, Seq, Msg}, #state{host = Host, unacked = Unacked} = State) ->
    route_forwarded(Host, Msg),
    {noreply, acknowledge(State#state{unacked = Unacked#{From => Seq}}, Seq rem ?ACK_EVERY == 0)};
handle_info({cmr_event, Event}, State) ->
    {noreply, apply_event(Event, State)};
handle_info({'DOWN', Ref, process, Pid, _Reason}, #state{host = Host, remote = Remote, homes = Homes} = State) ->
    case Remote of
        #{Pid := {Ref, U, S, Token}} ->
            mod_cmr_home:forget(Host, U, S, Token),
            {noreply, State#state{remote = maps:remove(Pid, Remote)}};
        _ ->
            case [Node || {Node, R} <- maps:to_list(Homes), R == Ref] of
                [Home] -> {noreply, home_lost(Home, State#state{homes = maps:remove(Home, Homes)})};
                [] -> {noreply, State}
            end
    end;
handle_info({Ref, Change, _Group, _Pids}, #state{pg_ref = Ref} = State) when Change == join; Change == leave ->
    {noreply, membership_changed(State)};
handle_info({mnesia_system_event, {Change, _Node}}, State) when Change == mnesia_up; Change == mnesia_down ->
    {noreply, update_outsiders(State)};
handle_info(tick, State) ->
    expire_journal(State#state.host),
    %% Judged once this process has read what is in its mailbox now: under
    %% a flood the acknowledgements wait there, behind the forwards.
    self() ! {check_acknowledgements, erlang:monotonic_time(millisecond)},
    %% A mailbox never empty (session events) holds no acknowledgement back.
    {noreply, log_outsiders(acknowledge(State, true))};
handle_info({check_acknowledgements, At}, State) ->
    {noreply, resend_unanswered(At, State)};
handle_info(_Info, State) ->
    {noreply, State}.

%%% Forwarding

watch(Home, #state{homes = Homes, host = Host} = State) ->
    case Homes of
        #{Home := _} -> State;
        _ -> State#state{homes = Homes#{Home => erlang:monitor(process, {proc(Host), Home})}}
    end.

acknowledged(Seq, Queue) ->
    case queue:peek(Queue) of
        {value, {Sent, _, _}} when Sent =< Seq -> acknowledged(Seq, queue:drop(Queue));
        _ -> Queue
    end.

%% Acknowledges to every forwarder once nothing more waits in the mailbox
%% (or when told to): acknowledgements are cumulative, so one per burst.
acknowledge(#state{unacked = Unacked} = State, Now) ->
    case Now orelse element(2, process_info(self(), message_queue_len)) == 0 of
        true ->
            maps:foreach(fun(From, Seq) -> From ! {cmr_ack, node(), Seq} end, Unacked),
            State#state{unacked = #{}};
        false ->
            State
    end.

home_lost(Home, #state{pending = Pending} = State) ->
    case maps:take(Home, Pending) of
        {Queue, Rest} ->
            route_natively(Home, queue:to_list(Queue), "went away"),
            State#state{pending = Rest};
        error ->
            State
    end.

%% A home that leaves messages unacknowledged too long is stuck: ejabberd
%% routes them (they may arrive twice if it wakes up).
resend_unanswered(Now, #state{pending = Pending} = State) ->
    Deadline = Now - ?ACK_TIMEOUT_MS,
    State#state{pending = maps:map(
                            fun(Home, Queue) ->
                                    {Late, Rest} = lists:splitwith(fun({_, At, _}) -> At < Deadline end,
                                                                   queue:to_list(Queue)),
                                    route_natively(Home, Late, "did not answer"),
                                    queue:from_list(Rest)
                            end, Pending)}.

route_natively(_Home, [], _Why) ->
    ok;
route_natively(Home, Forwards, Why) ->
    logger:warning("mod_cmr: home node ~ts ~ts with ~B forwarded messages unacknowledged; ejabberd routes them",
                   [Home, Why, length(Forwards)]),
    [route_natively(Msg) || {_, _, Msg} <- Forwards, replayable(Msg)],
    ok.

%% What is routed again after a node was lost may be what killed it:
%% ejabberd 23.01 dies (SIGSEGV) delivering a stanza nested some thousands
%% deep, so deeply nested messages are not sent to a second node.
replayable(Msg) ->
    not deeper_than(?MAX_REPLAY_DEPTH, [xmpp:encode(Msg)]).

deeper_than(Depth, _Els) when Depth < 0 -> true;
deeper_than(Depth, Els) ->
    lists:any(fun(#xmlel{children = Children}) -> deeper_than(Depth - 1, Children);
                 (_) -> false
              end, Els).

%%% Sessions of other nodes, homed here

apply_event(Event, #state{host = Host, remote = Remote} = State) ->
    mod_cmr_home:apply_event(Host, Event),
    case Event of
        {register, U, S, _R, Token, Pid, _, _, _} when node(Pid) /= node() ->
            case Remote of
                #{Pid := _} -> State;
                _ -> State#state{remote = Remote#{Pid => {erlang:monitor(process, Pid), U, S, Token}}}
            end;
        {unregister, _U, _S, _R, _Token, Pid} ->
            case maps:take(Pid, Remote) of
                {{Ref, _, _, _}, Rest} ->
                    erlang:demonitor(Ref, [flush]),
                    State#state{remote = Rest};
                error ->
                    State
            end;
        _ ->
            State
    end.

%%% Membership

members(Host) ->
    lists:usort([node(Pid) || Pid <- pg:get_members(?SCOPE, Host)]).

membership_changed(#state{host = Host, members = Old} = State) ->
    case members(Host) of
        Old ->
            State;
        New ->
            persistent_term:put({?MODULE, Host}, New),
            Left = Old -- New,
            Dropped = drop_sessions(Host, New, Left),
            Lost = [Node || Node <- Left, not lists:member(Node, nodes())],
            {Adopted, State1} = adopt(Host, Old, New, State),
            Replayed = replay(Host, Lost),
            register_existing_sessions(Host),
            logger:notice("mod_cmr: nodes routing ~ts are now ~ts; ~B sessions dropped here (left, or homed "
                          "elsewhere now), ~B taken from ejabberd's session table (homed here now), ~B messages "
                          "to lost nodes routed again; this node's sessions register again with their accounts' homes",
                          [Host, lists:join(", ", [atom_to_list(N) || N <- New]), Dropped, Adopted, Replayed]),
            update_outsiders(State1#state{members = New, remote = maps:filter(fun still_homed/2, State1#state.remote)})
    end.

%% Registers, from ejabberd's session table, the sessions of the accounts
%% homed here now and not before: CMR routes them at once, before each
%% session registers itself again with all of its state (show, XEP-0198).
adopt(Host, Old, New, State) ->
    Accounts = lists:usort([{U, S} || {U, S, _} <- ejabberd_sm:get_vh_session_list(Host),
                                      home_among(New, U, S) == node(), home_among(Old, U, S) /= node()]),
    Events = [Event || {U, S} <- Accounts, {R, Info} <- ejabberd_sm:get_user_info(U, S),
                       Event <- adopted_session(U, S, R, Info, New)],
    {length(Events), lists:foldl(fun apply_event/2, State, Events)}.

adopted_session(U, S, R, Info, Members) ->
    Pid = proplists:get_value(pid, Info),
    case lists:member(node(Pid), Members) andalso token(node(Pid), proplists:get_value(ts, Info)) of
        false -> [];
        undefined -> [];
        Token ->
            {Priority, Available} = case proplists:get_value(priority, Info) of
                                        undefined -> {0, false};
                                        P -> {P, true}
                                    end,
            [{register, U, S, R, Token, Pid, Priority, <<>>, Available}]
    end.

update_outsiders(#state{host = Host, members = Members, outsiders = Old} = State) ->
    case ejabberd_cluster:get_nodes() -- Members of
        Old ->
            State;
        New ->
            persistent_term:put({?MODULE, outsiders, Host}, New),
            State#state{outsiders = New, outsiders_since = erlang:monotonic_time(millisecond)}
    end.

log_outsiders(#state{outsiders = Same, logged_outsiders = Same} = State) ->
    State;
log_outsiders(#state{outsiders_since = Since} = State) ->
    case erlang:monotonic_time(millisecond) - Since < ?OUTSIDERS_LOG_DELAY_MS of
        true -> State;
        false -> log_outsiders_now(State)
    end.

log_outsiders_now(#state{host = Host, outsiders = Outsiders} = State) ->
    Outsiders /= [] andalso logger:notice("mod_cmr: ~ts run without mod_cmr for ~ts: ejabberd routes the "
                                          "messages of accounts with a session there",
                                          [lists:join(", ", [atom_to_list(N) || N <- Outsiders]), Host]),
    State#state{logged_outsiders = Outsiders}.

%% Keeps watching the remote sessions still registered here.
still_homed(_Pid, {Ref, U, S, Token}) ->
    case mod_cmr_home:has_session(S, U, S, Token) of
        true -> true;
        false -> erlang:demonitor(Ref, [flush]), false
    end.

%% Drops the sessions of nodes that left, and those of accounts that are
%% now homed elsewhere; returns how many.
drop_sessions(Host, Members, Left) ->
    Gone = [{U, S, Token} || {U, S, Token, Pid} <- mod_cmr_home:sessions(Host),
                             lists:member(node(Pid), Left) orelse home_among(Members, U, S) /= node()],
    [mod_cmr_home:forget(Host, U, S, Token) || {U, S, Token} <- Gone],
    length(Gone).

%% Routes again what was delivered to the lost nodes within the replay
%% window (the journal holds nothing older).
replay(Host, Nodes) ->
    Table = journal_table(Host),
    Messages = lists:append(
                 [[Msg || {_, Msg} <- ets:select(Table, [{{{Node, '_', '_'}, '_'}, [], ['$_']}])]
                  || Node <- Nodes]),
    [ets:match_delete(Table, {{Node, '_', '_'}, '_'}) || Node <- Nodes],
    Replayable = [Msg || Msg <- Messages, replayable(Msg)],
    [ejabberd_sm:route(Msg) || Msg <- Replayable],
    length(Replayable).

expire_journal(Host) ->
    Cutoff = erlang:monotonic_time(millisecond) - ?REPLAY_WINDOW_MS,
    ets:select_delete(journal_table(Host), [{{{'_', '$1', '_'}, '_'}, [{'<', '$1', Cutoff}], [true]}]).
