%%% mod_cmr_forwarder: the sending end of mod_cmr_cluster's forwarding
%%% toward one home node (one process per host and home node).
%%%
%%% Each home has its own forwarder so that a home that stops answering
%%% holds up only the messages to the accounts homed there: a send to a node
%%% whose distribution buffer is full suspends the sending process until it
%%% drains, and here that process serves that node alone.
%%%
%%% It sends each message to the home's mod_cmr_cluster process, journals
%%% it, and keeps it until the home acknowledges it; what the home leaves
%%% unacknowledged too long, or holds when it goes away, is handed to
%%% Fallback (ejabberd routes it). mod_cmr_cluster starts it on the first
%%% message for its home and keeps it for the module's life, as a sender
%%% may hold its pid at any moment: a stopped forwarder would lose what it
%%% is sent next.
-module(mod_cmr_forwarder).
-behaviour(gen_server).

-export([start_link/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% A forward the home has not acknowledged within this is routed by
%% ejabberd (the home is stuck; one that dies is noticed at once).
-define(ACK_TIMEOUT_MS, 5000).
-define(TICK_MS, 1000).

-record(state, {home :: {atom(), node()},
                journal :: mod_cmr_journal:journal(),
                %% Routes messages as ejabberd would: Fallback(Messages, Why).
                fallback :: fun(([term()], string()) -> ok),
                seq = 0 :: non_neg_integer(),
                %% {Seq, SentAt, Message}, in order.
                pending = queue:new() :: queue:queue(),
                monitor :: reference() | undefined}).

%% Home is the registered name and node of the home's mod_cmr_cluster
%% process.
-spec start_link({atom(), node()}, mod_cmr_journal:journal(), fun(([term()], string()) -> ok)) -> {ok, pid()}.
start_link(Home, Journal, Fallback) ->
    gen_server:start_link(?MODULE, {Home, Journal, Fallback}, []).

init({Home, Journal, Fallback}) ->
    timer:send_interval(?TICK_MS, tick),
    {ok, #state{home = Home, journal = Journal, fallback = Fallback}}.

handle_call(_Request, _From, State) ->
    {reply, {error, badarg}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info({forward, Msg}, #state{home = {_, Node} = Home, seq = Seq0, pending = Pending} = State0) ->
    Seq = Seq0 + 1,
    State = watch(State0),
    %% As a term: sent encoded, the home's one process would decode it,
    %% which distribution does outside it (in a flood that process fell
    %% more than the acknowledgement timeout behind: messages twice).
    Home ! {cmr_route, self(), Seq, Msg},
    %% Acknowledged means routed, not received: the home may die with it in
    %% its sessions' queues.
    Now = erlang:monotonic_time(millisecond),
    mod_cmr_journal:add(State#state.journal, [Node], Now, term_to_binary(Msg)),
    {noreply, State#state{seq = Seq, pending = queue:in({Seq, Now, Msg}, Pending)}};
handle_info({cmr_ack, _Node, Seq}, #state{pending = Pending} = State) ->
    {noreply, State#state{pending = acknowledged(Seq, Pending)}};
handle_info(tick, State) ->
    %% Judged once this process has read what is in its mailbox now: under
    %% a flood the acknowledgements wait there, behind the forwards.
    self() ! {check_acknowledgements, erlang:monotonic_time(millisecond)},
    {noreply, State};
handle_info({check_acknowledgements, At}, #state{pending = Pending, fallback = Fallback} = State) ->
    {Late, Rest} = lists:splitwith(fun({_, SentAt, _}) -> SentAt < At - ?ACK_TIMEOUT_MS end, queue:to_list(Pending)),
    Fallback([Msg || {_, _, Msg} <- Late], "did not answer"),
    {noreply, State#state{pending = queue:from_list(Rest)}};
handle_info({'DOWN', Ref, process, _, _Reason}, #state{monitor = Ref, pending = Pending, fallback = Fallback} = State) ->
    Fallback([Msg || {_, _, Msg} <- queue:to_list(Pending)], "went away"),
    {noreply, State#state{pending = queue:new(), monitor = undefined}};
handle_info(_Info, State) ->
    {noreply, State}.

%% The home's process is watched from the first forward after it was lost
%% (a home whose mod_cmr restarts is the same name again).
watch(#state{monitor = undefined, home = Home} = State) ->
    State#state{monitor = erlang:monitor(process, Home)};
watch(State) ->
    State.

acknowledged(Seq, Queue) ->
    case queue:peek(Queue) of
        {value, {Sent, _, _}} when Sent =< Seq -> acknowledged(Seq, queue:drop(Queue));
        _ -> Queue
    end.
