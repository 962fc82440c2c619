%%% EUnit tests of mod_cmr_journal, the byte-bounded journal of what a
%%% cluster node handed to other nodes (it needs no ejabberd).
-module(mod_cmr_journal_tests).
-include_lib("eunit/include/eunit.hrl").

-define(BOUND, 256 * 1024).

%% A message-sized entry (about 1 KB, its text a binary that ETS keeps
%% outside the table: the bound counts it all the same).
entry(I) -> {message, I, binary:copy(<<"x">>, 1000)}.

fill(Journal, Count) ->
    [mod_cmr_journal:add(Journal, [n1@h], 0, entry(I)) || I <- lists:seq(1, Count)].

bound_holds_and_overflow_is_counted_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    Results = fill(Journal, 2000),
    Kept = length([ok || ok <- Results]),
    %% The first ones are kept, as the journal fills.
    ?assertEqual(lists:duplicate(Kept, ok), lists:sublist(Results, Kept)),
    Refused = length([o || overflow <- Results]),
    %% 2,000 entries of 1 KB do not fit in 256 KB: most are refused, the
    %% bound holds (one entry at most beyond it), each kept entry counts its
    %% bytes and each refusal counts.
    ?assert(Kept > 0 andalso Refused > 0),
    ?assert(mod_cmr_journal:bytes(Journal) =< ?BOUND + erlang:external_size(entry(Kept))),
    ?assertEqual(lists:sum([erlang:external_size(entry(I)) || I <- lists:seq(1, Kept)]),
                 mod_cmr_journal:bytes(Journal)),
    ?assertEqual(Refused, mod_cmr_journal:overflowed(Journal)),
    %% Once expired, it is empty and takes entries again; the count stays.
    ?assertEqual(Kept, mod_cmr_journal:expire(Journal, 1)),
    ?assertEqual(0, mod_cmr_journal:bytes(Journal)),
    ?assertEqual(ok, mod_cmr_journal:add(Journal, [n1@h], 5, entry(0))),
    ?assertEqual(Refused, mod_cmr_journal:overflowed(Journal)).

take_gives_a_nodes_entries_oldest_first_and_removes_them_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    ok = mod_cmr_journal:add(Journal, [a@h, b@h], 10, first),
    ok = mod_cmr_journal:add(Journal, [a@h], 20, second),
    ok = mod_cmr_journal:add(Journal, [b@h], 30, other),
    ?assertEqual([first, second], mod_cmr_journal:take(Journal, a@h)),
    ?assertEqual(erlang:external_size(first) + erlang:external_size(other), mod_cmr_journal:bytes(Journal)),
    ?assertEqual([], mod_cmr_journal:take(Journal, a@h)),
    ?assertEqual([first, other], mod_cmr_journal:take(Journal, b@h)).

expire_forgets_what_is_older_than_the_cutoff_test() ->
    Journal = mod_cmr_journal:new(?BOUND),
    ok = mod_cmr_journal:add(Journal, [a@h], 10, old),
    ok = mod_cmr_journal:add(Journal, [a@h], 20, recent),
    ?assertEqual(1, mod_cmr_journal:expire(Journal, 15)),
    ?assertEqual([recent], mod_cmr_journal:take(Journal, a@h)).
