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
%%%  - as a forwarder, it starts one mod_cmr_forwarder per home node, which
%%%    keeps each forwarded message until its home acknowledges it, and has
%%%    ejabberd route it when the home goes away or does not answer in time
%%%    (one per home, so that a home that hangs holds up its own accounts
%%%    only);
%%%  - on either side, what was handed to another node (forwarded, or
%%%    delivered to a session there) is kept in a journal for a moment
%%%    (mod_cmr_journal, bounded in bytes);
%%%  - on a membership change, it drops the accounts homed elsewhere now and
%%%    the sessions of nodes that left, has this node's sessions register
%%%    again with their (maybe new) homes, and routes again what the
%%%    journal holds for a lost node.
%%%
%%% Calls go one way: mod_cmr (the hooks) calls this module, which calls
%%% mod_cmr_home (the library, on the account's home node) and the
%%% forwarders; none of them calls back. This process owns the home's
%%% session table (made by mod_cmr_home, which alone writes it), the journal
%%% and the forwarders.
-module(mod_cmr_cluster).
-behaviour(gen_server).

-export([start/2, stop/1, home/2, send_event/3, route/2, call_home/4, token/2, register_existing_sessions/1,
         metric_rows/1, metrics_doc/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include("logger.hrl").
-include("xmpp.hrl").

-define(SCOPE, mod_cmr_pg).
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
%% A full journal is reported at most this often.
-define(OVERFLOW_LOG_INTERVAL_MS, 10000).

%% Each node's number in the cluster, unique among the nodes of Mnesia's
%% schema: it sets apart the session tokens of different nodes (ejabberd's
%% SIDs are unique on their node only).
-record(cmr_node, {node :: node(), index :: 0..?NODE_INDEXES - 1}).

%% What a message needs of the host's transport on this node, made once at
%% start: this process's name, the journal, and the forwarder of each home
%% node (written by this process only).
-record(transport, {proc :: atom(), journal :: mod_cmr_journal:journal(), forwarders :: ets:tid()}).

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
                %% The journal's overflow count when last logged, and when.
                overflow_logged = 0 :: non_neg_integer(),
                overflow_logged_at :: integer() | undefined,
                %% Home: the highest sequence number routed per forwarder,
                %% not yet acknowledged.
                unacked = #{} :: #{pid() => non_neg_integer()},
                %% Home: monitored sessions of other nodes.
                remote = #{} :: #{pid() => {reference(), binary(), binary(), non_neg_integer()}}}).

%%% API

%% MaxJournalBytes: the bound of the journal (mod_cmr's max_journal_size).
start(Host, MaxJournalBytes) ->
    case gen_mod:start_child(?MODULE, Host, MaxJournalBytes) of
        {ok, _} -> ok;
        {error, Reason} -> {error, Reason}
    end.

stop(Host) ->
    gen_mod:stop_child(?MODULE, Host),
    persistent_term:erase({?MODULE, Host}),
    persistent_term:erase({?MODULE, outsiders, Host}),
    persistent_term:erase({?MODULE, transport, Host}).

transport(Host) -> persistent_term:get({?MODULE, transport, Host}).

proc(Host) -> (transport(Host))#transport.proc.

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
%% to (this node's forwarder to that home keeps it until the home
%% acknowledges it).
%% Returns {stop, drop} when it is CMR's, or the message for ejabberd.
route(Host, #message{to = #jid{luser = U}} = Msg) ->
    case home(Host, U) of
        Home when Home == node() ->
            route_here(Host, Msg);
        Home ->
            forwarder(Host, Home) ! {forward, Msg},
            {stop, drop}
    end.

%% The forwarder to Home, started by this host's process on the first
%% message there.
forwarder(Host, Home) ->
    #transport{proc = Proc, forwarders = Forwarders} = Transport = transport(Host),
    case ets:lookup(Forwarders, Home) of
        [{_, Pid}] -> Pid;
        [] ->
            %% That process routes too, what it replays (replay/2).
            case process_info(self(), registered_name) of
                {registered_name, Proc} -> start_forwarder(Transport, Home);
                _ -> gen_server:call(Proc, {forwarder, Home}, infinity)
            end
    end.

%% In this host's process, which alone writes the table of forwarders.
start_forwarder(#transport{proc = Proc, journal = Journal, forwarders = Forwarders}, Home) ->
    case ets:lookup(Forwarders, Home) of
        [{_, Pid}] ->
            Pid;
        [] ->
            {ok, Pid} = mod_cmr_forwarder:start_link({Proc, Home}, Journal,
                                                     fun(Msgs, Why) -> route_natively(Home, Msgs, Why) end),
            ets:insert(Forwarders, {Home, Pid}),
            Pid
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

journal(Host) -> (transport(Host))#transport.journal.

%% Records that Msg was handed to Nodes (other nodes than this one), for a
%% replay if one of them is lost (unless the journal is full).
journal(Host, Nodes, Msg) ->
    mod_cmr_journal:add(journal(Host), Nodes, erlang:monotonic_time(millisecond), term_to_binary(Msg)),
    ok.

%% The transport's figures for the host on this node, in the rows of
%% mod_cmr_home:metric_rows/1. The library knows nothing of clusters.
metric_rows(Host) ->
    Journal = journal(Host),
    [{<<"cmr_cluster_journal_bytes">>, <<>>, <<"gauge">>, mod_cmr_journal:bytes(Journal)},
     {<<"cmr_cluster_journal_overflow_total">>, <<>>, <<"counter">>, mod_cmr_journal:overflowed(Journal)}].

metrics_doc() ->
    "`cmr_cluster_journal_bytes` (gauge): bytes held by the journal of what this node handed to other nodes "
    "in the last seconds, for a replay if one of them is lost (at most about max_journal_size). "
    "`cmr_cluster_journal_overflow_total` (counter): messages handed to another node while the journal was full, "
    "so not kept for a replay. ".

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

init([Host, MaxJournalBytes]) ->
    claim_node_index(),
    persistent_term:put({?MODULE, transport, Host},
                        #transport{proc = gen_mod:get_module_proc(Host, ?MODULE),
                                   journal = mod_cmr_journal:new(MaxJournalBytes),
                                   forwarders = ets:new(cmr_forwarders, [protected, {read_concurrency, true}])}),
    mod_cmr_home:create_sessions_table(Host),
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

handle_call({forwarder, Home}, _From, #state{host = Host} = State) ->
    {reply, start_forwarder(transport(Host), Home), State};
handle_call(_Request, _From, State) ->
    {reply, {error, badarg}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% Home side (the forwarders are the other).
handle_info({cmr_route, From, Seq, Msg}, #state{host = Host, unacked = Unacked} = State) ->
    route_forwarded(Host, Msg),
    {noreply, acknowledge(State#state{unacked = Unacked#{From => Seq}}, Seq rem ?ACK_EVERY == 0)};
handle_info({cmr_event, Event}, State) ->
    {noreply, apply_event(Event, State)};
handle_info({'DOWN', Ref, process, Pid, _Reason}, #state{host = Host, remote = Remote} = State) ->
    case Remote of
        #{Pid := {Ref, U, S, Token}} ->
            mod_cmr_home:forget(Host, U, S, Token),
            {noreply, State#state{remote = maps:remove(Pid, Remote)}};
        _ ->
            {noreply, State}
    end;
handle_info({Ref, Change, _Group, _Pids}, #state{pg_ref = Ref} = State) when Change == join; Change == leave ->
    {noreply, membership_changed(State)};
handle_info({mnesia_system_event, {Change, _Node}}, State) when Change == mnesia_up; Change == mnesia_down ->
    {noreply, update_outsiders(State)};
handle_info(tick, #state{host = Host} = State) ->
    mod_cmr_journal:expire(journal(Host), erlang:monotonic_time(millisecond) - ?REPLAY_WINDOW_MS),
    %% A mailbox never empty (session events) holds no acknowledgement back.
    {noreply, log_overflow(log_outsiders(acknowledge(State, true)))};
handle_info(_Info, State) ->
    {noreply, State}.

%%% Home side of forwarding

%% Acknowledges to every forwarder once nothing more waits in the mailbox
%% (or when told to): acknowledgements are cumulative, so one per burst.
%% One that would wait on a full distribution buffer (its node hangs) is
%% kept for the next time instead: this process serves every forwarder.
acknowledge(#state{unacked = Unacked} = State, Now) ->
    case Now orelse element(2, process_info(self(), message_queue_len)) == 0 of
        true ->
            State#state{unacked = maps:filter(fun(From, Seq) ->
                                                      erlang:send(From, {cmr_ack, node(), Seq}, [nosuspend]) == nosuspend
                                              end, Unacked)};
        false ->
            State
    end.

%% Forwarded messages that a home left unacknowledged too long (it is
%% stuck: they may arrive twice if it wakes up), or held when it went away:
%% ejabberd routes them. Run by the forwarder to Home.
route_natively(_Home, [], _Why) ->
    ok;
route_natively(Home, Forwards, Why) ->
    logger:warning("mod_cmr: home node ~ts ~ts with ~B forwarded messages unacknowledged; ejabberd routes them",
                   [Home, Why, length(Forwards)]),
    [route_natively(Msg) || Msg <- Forwards, replayable(Msg)],
    ok.

%% Says that the journal was full, at most once per interval, with how many
%% messages it did not keep meanwhile.
log_overflow(#state{host = Host, overflow_logged = Logged, overflow_logged_at = At} = State) ->
    Now = erlang:monotonic_time(millisecond),
    case mod_cmr_journal:overflowed(journal(Host)) of
        Logged ->
            State;
        _ when At /= undefined, Now - At < ?OVERFLOW_LOG_INTERVAL_MS ->
            State;
        Overflowed ->
            logger:warning("mod_cmr: the journal of ~ts is full (max_journal_size): ~B messages handed to other "
                           "nodes were not kept for a replay; a node lost now may lose them",
                           [Host, Overflowed - Logged]),
            State#state{overflow_logged = Overflowed, overflow_logged_at = Now}
    end.

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
    Messages = lists:append([mod_cmr_journal:take(journal(Host), Node) || Node <- Nodes]),
    Replayable = [Msg || Msg <- Messages, replayable(Msg)],
    [ejabberd_sm:route(Msg) || Msg <- Replayable],
    length(Replayable).
