%%% EUnit tests of mod_cmr_journal, the byte-bounded journal of what a
%%% cluster node handed to other nodes (it needs no ejabberd).
-module(mod_cmr_journal_tests).
-include_lib("eunit/include/eunit.hrl").

-define(BOUND, 256 * 1024).

%% A message-sized entry (about 1 KB, its text a binary that ETS would keep
%% outside the table: the bound counts it all the same).
entry(I) -> {message, I, binary:copy(<<"x">>, 1000)}.

add(Journal, Nodes, Now, Entry) -> mod_cmr_journal:add(Journal, Nodes, Now, term_to_binary(Entry)).

bound_holds_and_overflow_is_counted_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    Empty = mod_cmr_journal:bytes(Journal),
    Results = [add(Journal, [n1@h], 0, entry(I)) || I <- lists:seq(1, 2000)],
    Kept = length([ok || ok <- Results]),
    Refused = length([o || overflow <- Results]),
    %% 2,000 entries of 1 KB do not fit in 256 KB: the first ones are kept
    %% as the journal fills, the others refused, each refusal counted.
    ?assert(Kept > 200 andalso Refused > 0),
    ?assertEqual(lists:duplicate(Kept, ok), lists:sublist(Results, Kept)),
    ?assertEqual(Refused, mod_cmr_journal:overflowed(Journal)),
    %% The bound holds, one entry at most beyond it, and the count is the
    %% memory really held: the table's and the encoded messages'.
    Held = mod_cmr_journal:bytes(Journal),
    ?assert(Held >= ?BOUND andalso Held =< ?BOUND + 2 * 1024),
    ?assert(Held >= Kept * 1000 + Empty),
    %% Once expired, it is as empty as at first and takes entries again;
    %% the count of refusals stays.
    ?assertEqual(Kept, mod_cmr_journal:expire(Journal, 1)),
    ?assertEqual(Empty, mod_cmr_journal:bytes(Journal)),
    ?assertEqual(ok, add(Journal, [n1@h], 5, entry(0))),
    ?assertEqual(Refused, mod_cmr_journal:overflowed(Journal)).

take_gives_a_nodes_entries_oldest_first_and_removes_them_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    Empty = mod_cmr_journal:bytes(Journal),
    ok = add(Journal, [a@h, b@h], 10, entry(1)),
    ok = add(Journal, [a@h], 20, entry(2)),
    ok = add(Journal, [b@h], 30, entry(3)),
    ?assertEqual([entry(1), entry(2)], mod_cmr_journal:take(Journal, a@h)),
    ?assertEqual([], mod_cmr_journal:take(Journal, a@h)),
    ?assertEqual([entry(1), entry(3)], mod_cmr_journal:take(Journal, b@h)),
    ?assertEqual(Empty, mod_cmr_journal:bytes(Journal)).

expire_forgets_what_is_older_than_the_cutoff_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    ok = add(Journal, [a@h], 10, old),
    ok = add(Journal, [a@h], 20, recent),
    ?assertEqual(1, mod_cmr_journal:expire(Journal, 15)),
    ?assertEqual([recent], mod_cmr_journal:take(Journal, a@h)).
