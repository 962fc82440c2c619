%%% mod_cmr_journal: what this node handed to other nodes (forwarded to an
%%% account's home, or delivered to a session there), kept a moment for a
%%% replay if that node is lost, within a bound in bytes.
%%%
%%% Each message is kept encoded by the caller (Erlang's external term
%%% format, term_to_binary/1): a third of its size as a
%%% term, and its bytes are then those of one binary, counted exactly
%%% beside the table's own memory (ETS leaves a binary's bytes out of it).
%%% A full journal takes no more entries: the message still goes out, but
%%% it is not routed again if its node is lost (it may then be lost with
%%% that node's queues); each such message is counted. Writers running at
%%% the same moment may each add one message beyond the bound.
%%%
%%% The table is public: the senders' processes and mod_cmr_cluster's
%%% processes write it at once; the process that calls new/1 owns it.
-module(mod_cmr_journal).

-export([new/1, add/4, take/2, expire/2, overflowed/1, bytes/1]).

-record(journal, {table :: ets:tid(), max_bytes :: pos_integer(),
                  %% Bytes of the encoded messages held, and messages refused.
                  encoded :: atomics:atomics_ref(), overflowed :: counters:counters_ref()}).
-opaque journal() :: #journal{}.
-export_type([journal/0]).

-spec new(pos_integer()) -> journal().
new(MaxBytes) ->
    %% Plain counters: the table's memory is read at every add, and
    %% decentralized ones are summed over every scheduler to read it.
    #journal{table = ets:new(cmr_journal, [public, ordered_set, {write_concurrency, true},
                                           {decentralized_counters, false}]),
             max_bytes = MaxBytes, encoded = atomics:new(1, [{signed, true}]),
             overflowed = counters:new(1, [write_concurrency])}.

%% Records that Bin (an entry encoded with term_to_binary/1) was handed to
%% Nodes at Now (monotonic ms): ok, or overflow when the journal is full and
%% it was not kept.
-spec add(journal(), [node()], integer(), binary()) -> ok | overflow.
add(#journal{table = Table, encoded = Encoded, overflowed = Overflowed} = Journal, Nodes, Now, Bin) ->
    case bytes(Journal) < Journal#journal.max_bytes of
        true ->
            atomics:add(Encoded, 1, byte_size(Bin) * length(Nodes)),
            ets:insert(Table, [{{Node, Now, erlang:unique_integer()}, Bin} || Node <- Nodes]),
            ok;
        false ->
            counters:add(Overflowed, 1, 1),
            overflow
    end.

%% What was handed to Node, oldest first and decoded, removed from the
%% journal.
-spec take(journal(), node()) -> [term()].
take(#journal{table = Table} = Journal, Node) ->
    [binary_to_term(Bin) || Bin <- remove(Journal, ets:select(Table, [{{{Node, '_', '_'}, '_'}, [], [{element, 1, '$_'}]}]))].

%% Forgets what was handed over before Cutoff (monotonic ms); returns how
%% many entries.
-spec expire(journal(), integer()) -> non_neg_integer().
expire(#journal{table = Table} = Journal, Cutoff) ->
    length(remove(Journal, ets:select(Table, [{{{'_', '$1', '_'}, '_'}, [{'<', '$1', Cutoff}], [{element, 1, '$_'}]}]))).

%% Removes the entries of Keys (one by one, so that each one's bytes leave
%% the count exactly); returns their binaries.
remove(#journal{table = Table, encoded = Encoded}, Keys) ->
    [begin atomics:sub(Encoded, 1, byte_size(Bin)), Bin end || Key <- Keys, {_, Bin} <- ets:take(Table, Key)].

%% How many messages a full journal did not keep, since new/1.
-spec overflowed(journal()) -> non_neg_integer().
overflowed(#journal{overflowed = Overflowed}) ->
    counters:get(Overflowed, 1).

%% What the journal holds now, in bytes: the table and the encoded messages.
-spec bytes(journal()) -> non_neg_integer().
bytes(#journal{table = Table, encoded = Encoded}) ->
    ets:info(Table, memory) * erlang:system_info(wordsize) + atomics:get(Encoded, 1).
