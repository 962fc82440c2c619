%%% EUnit tests of the cmr binding: every call, good and bad input. Bad
%%% input comes back as {error, {Status, Message}}; the VM survives.
-module(cmr_tests).
-include_lib("eunit/include/eunit.hrl").

router() ->
    {ok, R} = cmr:new(<<"default=roundrobin hints=any">>),
    new_account = cmr:register(R, <<"Cluster@Example.ORG/node-1">>, 1, 0, <<>>, true),
    ok = cmr:register(R, <<"cluster@example.org/node-2">>, 2, 0, <<"chat">>, true),
    ok = cmr:register(R, <<"cluster@example.org/node-3">>, 3, 5, <<>>, false),
    ok = cmr:register(R, <<"cluster@example.org/node-4">>, 4, -1, <<"away">>, true),
    R.

contains(Haystack, Needle) -> binary:match(Haystack, Needle) =/= nomatch.

version_test() ->
    ?assertEqual(<<"0.1.0">>, cmr:version()).

new_test() ->
    ?assertMatch({error, {invalid_option, _}}, cmr:new(<<"offered=roundrobin">>)),
    {error, {invalid_option, Msg}} = cmr:new(<<"colour=blue">>),
    ?assert(contains(Msg, <<"colour">>)),
    %% Its longest kind: two inputs of control characters, quoted whole.
    {error, {invalid_option, Escaped}} = cmr:new(<<(binary:copy(<<1>>, 700))/binary, "=", (binary:copy(<<1>>, 899))/binary>>),
    ?assert(contains(Escaped, <<"(700 bytes in all)">>) andalso contains(Escaped, <<"(899 bytes in all)">>)),
    ?assertMatch({error, {invalid_utf8, _}}, cmr:new(<<"hints=", 255>>)),
    ?assertMatch({error, {badarg, _}}, cmr:new("a list, not a binary")),
    ?assertMatch({error, {badarg, _}}, cmr:new(42)).

register_errors_test() ->
    R = router(),
    ?assertMatch({error, {invalid_jid, _}}, cmr:register(R, <<"cluster@example.org">>, 9, 0, <<>>, true)),
    ?assertMatch({error, {invalid_jid, _}}, cmr:register(R, <<"@@/r">>, 9, 0, <<>>, true)),
    ?assertMatch({error, {invalid_utf8, _}}, cmr:register(R, <<"a@b/", 255>>, 9, 0, <<>>, true)),
    {error, {invalid_argument, P}} = cmr:register(R, <<"a@b/r">>, 9, 200, <<>>, true),
    ?assert(contains(P, <<"priority '200'">>)),
    ?assertMatch({error, {invalid_argument, _}}, cmr:register(R, <<"a@b/r">>, 9, 1 bsl 40, <<>>, true)),
    ?assertMatch({error, {invalid_argument, _}}, cmr:register(R, <<"a@b/r">>, 9, 0, <<"busy">>, true)),
    ?assertMatch({error, {badarg, _}}, cmr:register(R, <<"a@b/r">>, -1, 0, <<>>, true)),
    ?assertMatch({error, {badarg, _}}, cmr:register(R, <<"a@b/r">>, 9, 0, <<>>, maybe)),
    ?assertMatch({error, {badarg, _}}, cmr:register(not_a_router, <<"a@b/r">>, 9, 0, <<>>, true)),
    ?assertMatch({error, {badarg, _}}, cmr:register(R, 'a@b/r', 9, 0, <<>>, true)),
    %% A message longer than the NIF's first buffer comes back whole.
    {error, {invalid_jid, Long}} = cmr:register(R, <<"a@b/", (binary:copy(<<"r">>, 1500))/binary>>, 9, 0, <<>>, true),
    ?assert(contains(Long, <<"bytes in all">>)).

pick_test() ->
    R = router(),
    Picks = [cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<"s@x/y">>, <<>>, false) || _ <- lists:seq(1, 10)],
    ?assertEqual(5, length([ok || [1] <- Picks])),
    ?assertEqual(5, length([ok || [2] <- Picks])),
    ?assertEqual(not_routed, cmr:pick(R, <<"cluster@example.org">>, <<"headline">>, <<>>, <<>>, false)),
    ?assertEqual(not_routed, cmr:pick(R, <<"nobody@example.org">>, <<>>, <<>>, <<>>, false)),
    ?assertEqual([2], cmr:pick(R, <<"cluster@example.org">>, <<>>, <<>>, <<"urn:xmpp:cmr:mostactive">>, true)),
    ?assertMatch({error, {invalid_utf8, _}}, cmr:pick(R, <<255>>, <<>>, <<>>, <<>>, false)),
    ?assertMatch({error, {badarg, _}}, cmr:pick(R, "cluster@example.org", <<>>, <<>>, <<>>, false)).

pick_many_test() ->
    {ok, R} = cmr:new(<<"default=all">>),
    Registered = [cmr:register(R, <<"big@example.org/r", (integer_to_binary(I))/binary>>, 1000 + I, 1, <<>>, true)
                  || I <- lists:seq(1, 40)],
    ?assertEqual([new_account | lists:duplicate(39, ok)], Registered),
    ?assertEqual(lists:seq(1001, 1040), cmr:pick(R, <<"big@example.org">>, <<>>, <<>>, <<>>, false)).

session_calls_test() ->
    R = router(),
    ?assertEqual(ok, cmr:touch(R, <<"cluster@example.org/node-1">>, 1)),
    ?assertMatch({error, {not_found, _}}, cmr:touch(R, <<"cluster@example.org/node-1">>, 99)),
    ?assertEqual(ok, cmr:set_load(R, <<"cluster@example.org/node-1">>, 1, 7)),
    ?assertMatch({error, {badarg, _}}, cmr:set_load(R, <<"cluster@example.org/node-1">>, 1, -7)),
    ?assertEqual(ok, cmr:set_hibernating(R, <<"cluster@example.org/node-1">>, 1, true)),
    ?assertEqual([2], cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<>>, <<>>, false)),
    ?assertEqual(ok, cmr:set_hibernating(R, <<"cluster@example.org/node-1">>, 1, false)),
    ?assertMatch({error, {badarg, _}}, cmr:set_hibernating(R, <<"cluster@example.org/node-1">>, 1, maybe)),
    ?assertMatch({error, {not_found, _}}, cmr:set_hibernating(R, <<"cluster@example.org/node-1">>, 7, true)),
    ?assertEqual(ok, cmr:unregister(R, <<"cluster@example.org/node-1">>, 1)),
    ?assertMatch({error, {not_found, _}}, cmr:unregister(R, <<"cluster@example.org/node-1">>, 1)),
    %% By the account's bare JID and the token alone.
    ?assertEqual(ok, cmr:unregister(R, <<"cluster@example.org">>, 2)).

session_gone_test() ->
    R = router(),
    ?assertEqual(ok, cmr:session_gone(R, <<"cluster@example.org/node-1">>, 1)),
    ?assertEqual([2], cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<>>, <<>>, false)),
    %% Removed already (by another process, say): not found, and counted.
    ?assertMatch({error, {not_found, _}}, cmr:session_gone(R, <<"cluster@example.org/node-1">>, 1)),
    %% By the account's bare JID and the token alone.
    ?assertEqual(ok, cmr:session_gone(R, <<"cluster@example.org">>, 2)),
    ?assertEqual(not_routed, cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<>>, <<>>, false)),
    #{<<"gone_sessions">> := 3} = metrics(R),
    ?assertMatch({error, {invalid_jid, _}}, cmr:session_gone(R, <<"@@/r">>, 1)),
    ?assertMatch({error, {badarg, _}}, cmr:session_gone(R, <<"cluster@example.org/node-3">>, -1)),
    ?assertMatch({error, {badarg, _}}, cmr:session_gone(R, "cluster@example.org/node-3", 3)),
    ?assertMatch({error, {badarg, _}}, cmr:session_gone(not_a_router, <<"cluster@example.org/node-3">>, 3)).

%% The router's figures by series key.
metrics(R) ->
    {ok, Values} = cmr:metric_values(R),
    maps:from_list(lists:zip([Key || #{key := Key} <- cmr:metric_series()], Values)).

metric_series_test() ->
    Series = cmr:metric_series(),
    Keys = [Key || #{key := Key} <- Series],
    ?assertEqual(length(Keys), length(lists:usort(Keys))),
    ?assert(lists:all(fun(#{metric := <<"cmr_", _/binary>>, family := F, unit := U, help := H, kind := K}) ->
                              F /= <<>> andalso U /= <<>> andalso H /= <<>> andalso (K == counter orelse K == gauge)
                      end, Series)),
    ?assertMatch([#{key := <<"routed_all">>, metric := <<"cmr_messages_routed_total">>, family := <<"routed">>,
                    unit := <<"messages">>, label := <<"algorithm">>, label_value := <<"all">>, kind := counter}
                  | _], Series),
    [Sessions] = [S || #{key := <<"sessions">>} = S <- Series],
    ?assertMatch(#{metric := <<"cmr_sessions">>, label := <<>>, label_value := <<>>, kind := gauge}, Sessions),
    ?assertMatch({error, {badarg, _}}, cmr:metric_values(not_a_router)).

metrics_test() ->
    {ok, Empty} = cmr:new(<<>>),
    Zero = metrics(Empty),
    ?assertEqual([0], lists:usort(maps:values(Zero))),
    ?assertEqual(length(cmr:metric_series()), map_size(Zero)),
    %% 4 sessions of one account (roundrobin), 2 of them eligible.
    R = router(),
    [[_] = cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<>>, <<>>, false) || _ <- lists:seq(1, 10)],
    [_] = cmr:pick(R, <<"cluster@example.org">>, <<>>, <<>>, <<"urn:xmpp:cmr:mostactive">>, true),
    %% Not CMR's type, and an account with no session: no algorithm applied.
    not_routed = cmr:pick(R, <<"cluster@example.org">>, <<"headline">>, <<>>, <<>>, false),
    not_routed = cmr:pick(R, <<"nobody@example.org">>, <<"chat">>, <<>>, <<>>, false),
    %% An account whose only session is unavailable: roundrobin found none.
    new_account = cmr:register(R, <<"away@example.org/a">>, 5, 0, <<>>, false),
    not_routed = cmr:pick(R, <<"away@example.org">>, <<"chat">>, <<>>, <<>>, false),
    {ok, _, false} = cmr:handle_iq(R, <<"<iq type='get' from='away@example.org/a' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>">>),
    {ok, _, false} = cmr:handle_iq(R, <<"<iq type='set' from='away@example.org/a' id='s'>"
                                       "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:example:fastest'/></iq>">>),
    {error, {invalid_xml, _}} = cmr:handle_iq(R, <<"<iq type='get'><query">>),
    not_mine = cmr:handle_iq(R, <<"<iq type='result' from='a@b/c' id='r'/>">>),
    ok = cmr:session_gone(R, <<"cluster@example.org/node-1">>, 1),
    ?assertEqual(Zero#{<<"routed_roundrobin">> => 10, <<"routed_mostactive">> => 1,
                       <<"left_to_server_roundrobin">> => 1, <<"left_to_server_none">> => 2,
                       <<"gone_sessions">> => 1, <<"iq_results">> => 1, <<"iq_errors">> => 2,
                       <<"sessions">> => 4, <<"accounts">> => 2},
                 metrics(R)).

constants_test() ->
    ?assertEqual(8, cmr:max_picks_per_message()),
    ?assertEqual(1000, cmr:activity_interval_ms()).

algorithm_test() ->
    R = router(),
    ?assertEqual({ok, <<"urn:xmpp:cmr:roundrobin">>}, cmr:get_algorithm(R, <<"cluster@example.org">>)),
    ?assertEqual(ok, cmr:set_algorithm(R, <<"cluster@example.org">>, <<"sticky">>)),
    ?assertEqual({ok, <<"urn:x-cmr:algorithm:sticky">>}, cmr:get_algorithm(R, <<"cluster@example.org">>)),
    ?assertMatch({error, {unknown_algorithm, _}}, cmr:set_algorithm(R, <<"cluster@example.org">>, <<"fastest">>)),
    ?assertMatch({error, {invalid_jid, _}}, cmr:get_algorithm(R, <<"not a jid@">>)).

iq_test() ->
    R = router(),
    {ok, Set, true} = cmr:handle_iq(R, <<"<iq type='set' from='cluster@example.org/node-1' id='s'>"
                                         "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:weighted'/></iq>">>),
    ?assert(contains(Set, <<"type='result'">>)),
    {ok, Query, false} = cmr:handle_iq(R, <<"<iq type='get' from='cluster@example.org/node-1' id='q'>"
                                           "<query xmlns='urn:xmpp:cmr:0'/></iq>">>),
    ?assert(contains(Query, <<"<active algorithm='urn:xmpp:cmr:weighted'/>">>)),
    ?assertEqual(not_mine, cmr:handle_iq(R, <<"<iq type='result' from='a@b/c' id='r'/>">>)),
    ?assertMatch({error, {invalid_xml, _}}, cmr:handle_iq(R, <<"<iq type='get'><query">>)),
    ?assertMatch({error, {badarg, _}}, cmr:handle_iq(R, 42)).

%% A submitted XEP-0004 form with Fields ({Var, [Value]}).
submitted(Fields) ->
    iolist_to_binary(["<x xmlns='jabber:x:data' type='submit'>",
                      [["<field var='", Var, "'>", [["<value>", V, "</value>"] || V <- Values], "</field>"]
                       || {Var, Values} <- Fields],
                      "</x>"]).

commands_test() ->
    ?assertEqual(#{node => <<"urn:xmpp:cmr:0#routing">>, name => <<"Message routing">>}, cmr:routing_command()),
    ?assertMatch(#{node := <<"urn:xmpp:cmr:0#account-routing">>, name := <<"Set an account's message routing">>},
                 cmr:admin_command()).

routing_command_test() ->
    R = router(),
    {form, Form} = cmr:routing_command(R, <<"cluster@example.org/node-2">>, <<>>),
    ?assert(contains(Form, <<"type='form'">>)),
    ?assert(contains(Form, <<"<value>urn:xmpp:cmr:roundrobin</value></option>">>)),
    ?assert(contains(Form, <<"node-2: 0 (0%)">>)),
    {completed, Note, true} = cmr:routing_command(R, <<"cluster@example.org/node-2">>,
                                                  submitted([{<<"algorithm">>, [<<"urn:xmpp:cmr:weighted">>]}])),
    ?assert(contains(Note, <<"Weighted by priority">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:weighted">>}, cmr:get_algorithm(R, <<"cluster@example.org">>)),
    %% Refused, or not this command's form: nothing changed.
    {refused, Unknown} = cmr:routing_command(R, <<"cluster@example.org/node-2">>,
                                             submitted([{<<"algorithm">>, [<<"urn:example:fastest">>]}])),
    ?assert(contains(Unknown, <<"urn:example:fastest">>)),
    {error, {invalid_argument, Bogus}} =
        cmr:routing_command(R, <<"cluster@example.org/node-2">>,
                            submitted([{<<"algorithm">>, [<<"urn:xmpp:cmr:all">>]}, {<<"bogus">>, [<<"x">>]}])),
    ?assert(contains(Bogus, <<"bogus">>)),
    {error, {invalid_argument, Two}} =
        cmr:routing_command(R, <<"cluster@example.org/node-2">>,
                            submitted([{<<"algorithm">>, [<<"urn:xmpp:cmr:all">>, <<"urn:xmpp:cmr:mostactive">>]}])),
    ?assert(contains(Two, <<"algorithm">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:weighted">>}, cmr:get_algorithm(R, <<"cluster@example.org">>)),
    {ok, Fixed} = cmr:new(<<"user_change=false">>),
    new_account = cmr:register(Fixed, <<"u@example.org/r">>, 1, 0, <<>>, true),
    {refused, NotAllowed} = cmr:routing_command(Fixed, <<"u@example.org/r">>,
                                                submitted([{<<"algorithm">>, [<<"urn:xmpp:cmr:mostactive">>]}])),
    ?assert(contains(NotAllowed, <<"does not let users change">>)),
    ?assertMatch({error, {invalid_jid, _}}, cmr:routing_command(R, <<"cluster@example.org">>, <<>>)),
    ?assertMatch({error, {badarg, _}}, cmr:routing_command(R, <<"cluster@example.org/node-2">>, undefined)),
    ?assertMatch({error, {badarg, _}}, cmr:routing_command(not_a_router, <<"cluster@example.org/node-2">>, <<>>)).

admin_command_test() ->
    R = router(),
    {ok, Form} = cmr:admin_form(R),
    ?assert(contains(Form, <<"var='accountjid'">>) andalso contains(Form, <<"var='algorithm'">>)),
    Submitted = submitted([{<<"accountjid">>, [<<"Offline@Example.org">>]}, {<<"algorithm">>, [<<"sticky">>]}]),
    {ok, Account} = cmr:admin_form_value(Submitted, <<"accountjid">>),
    ?assertEqual(<<"Offline@Example.org">>, Account),
    {ok, Algorithm} = cmr:admin_form_value(Submitted, <<"algorithm">>),
    ?assertEqual(<<"sticky">>, Algorithm),
    {error, {invalid_argument, Bogus}} =
        cmr:admin_form_value(submitted([{<<"accountjid">>, [<<"a@b">>]}, {<<"bogus">>, [<<"x">>]}]), <<"accountjid">>),
    ?assert(contains(Bogus, <<"bogus">>)),
    ?assertMatch({error, {badarg, _}}, cmr:admin_form_value(Submitted, accountjid)),
    %% Not bound by user_change; applied at once to an online account, and
    %% the URI to persist for an offline one.
    {ok, Fixed} = cmr:new(<<"user_change=false offered=all,mostactive,roundrobin">>),
    new_account = cmr:register(Fixed, <<"u@example.org/r">>, 1, 0, <<>>, true),
    ?assertEqual({ok, <<"urn:xmpp:cmr:roundrobin">>}, cmr:choose_for(Fixed, <<"u@example.org">>, <<"roundrobin">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:roundrobin">>}, cmr:get_algorithm(Fixed, <<"u@example.org">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:mostactive">>}, cmr:choose_for(Fixed, <<"nobody@example.org">>, <<"mostactive">>)),
    ?assertEqual({ok, <<"Messages to nobody@example.org are now routed by: Most active.">>},
                 cmr:choice_note(Fixed, <<"nobody@example.org">>, <<"urn:xmpp:cmr:mostactive">>)),
    {error, {not_offered, NotOffered}} = cmr:choose_for(Fixed, <<"u@example.org">>, <<"weighted">>),
    ?assert(contains(NotOffered, <<"urn:xmpp:cmr:weighted">>)),
    {error, {unknown_algorithm, Unknown}} = cmr:choose_for(Fixed, <<"u@example.org">>, <<"fastest">>),
    ?assert(contains(Unknown, <<"fastest">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:roundrobin">>}, cmr:get_algorithm(Fixed, <<"u@example.org">>)),
    ?assertMatch({error, {invalid_jid, _}}, cmr:choose_for(Fixed, <<"bad@@jid">>, <<"all">>)).

algorithm_for_test() ->
    {ok, R} = cmr:new(<<"offered=all,mostactive,roundrobin default=mostactive">>),
    %% Offline: the stored choice if offered, else the default.
    ?assertEqual({ok, <<"urn:xmpp:cmr:roundrobin">>}, cmr:algorithm_for(R, <<"o@example.org">>, <<"urn:xmpp:cmr:roundrobin">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:mostactive">>}, cmr:algorithm_for(R, <<"o@example.org">>, <<"urn:xmpp:cmr:weighted">>)),
    ?assertEqual({ok, <<"urn:xmpp:cmr:mostactive">>}, cmr:algorithm_for(R, <<"o@example.org">>, <<>>)),
    %% Online: the sessions'.
    new_account = cmr:register(R, <<"o@example.org/r">>, 1, 0, <<>>, true),
    ok = cmr:set_algorithm(R, <<"o@example.org">>, <<"all">>),
    ?assertEqual({ok, <<"urn:xmpp:cmr:all">>}, cmr:algorithm_for(R, <<"o@example.org">>, <<"urn:xmpp:cmr:roundrobin">>)),
    {error, {invalid_jid, Bad}} = cmr:algorithm_for(R, <<"bad@@jid">>, <<>>),
    ?assert(contains(Bad, <<"bad@@jid">>)),
    ?assertMatch({error, {badarg, _}}, cmr:algorithm_for(R, <<"o@example.org">>, undefined)).

disco_and_stats_test() ->
    R = router(),
    ?assertEqual({ok, <<"urn:xmpp:cmr:0\nurn:xmpp:cmr:hints:0">>}, cmr:disco_features(R)),
    {ok, Stats} = cmr:stats(R, <<"cluster@example.org">>),
    ?assert(contains(Stats, <<"node-2\t0\t0\tchat\ttrue\t0\t2\tfalse\n">>)),
    ?assertMatch({error, {not_found, _}}, cmr:stats(R, <<"nobody@example.org">>)).

concurrent_processes_test() ->
    R = router(),
    Parent = self(),
    Pids = [spawn_link(fun () ->
                [_] = cmr:pick(R, <<"cluster@example.org">>, <<"chat">>, <<>>, <<>>, false),
                Parent ! {done, self(), [cmr:pick(R, <<"cluster@example.org">>, <<>>, <<>>, <<>>, false)
                                         || _ <- lists:seq(1, 1000)]}
            end) || _ <- lists:seq(1, 8)],
    Results = lists:append([receive {done, P, L} -> L end || P <- Pids]),
    ?assertEqual(8000, length(Results)),
    ?assert(lists:all(fun ([T]) -> T =:= 1 orelse T =:= 2 end, Results)).

new_account_test() ->
    {ok, R} = cmr:new(<<>>),
    ?assertEqual(new_account, cmr:register(R, <<"m@x/a">>, 1, 0, <<>>, false)),
    ?assertEqual(ok, cmr:register(R, <<"m@x/b">>, 2, 0, <<>>, false)),
    ?assertEqual(ok, cmr:register(R, <<"m@x/a">>, 1, 0, <<>>, true)).

%% The test hooks are in the test build only (cmr_test).
shipped_module_has_no_test_hooks_test() ->
    {module, cmr} = code:ensure_loaded(cmr),
    ?assertNot(erlang:function_exported(cmr, live_routers, 0)),
    ?assertNot(erlang:function_exported(cmr, noop, 6)).

gc_frees_the_router_test() ->
    %% Collect every process first, so that no earlier test's routers are
    %% freed while this one counts.
    CollectAll = fun () -> [erlang:garbage_collect(P) || P <- processes()] end,
    CollectAll(),
    Before = cmr_test:live_routers(),
    %% The routers live in a process that ends; once it is gone and
    %% collected, each router's destructor has freed it.
    {Pid, Ref} = spawn_monitor(fun () ->
        Routers = [begin {ok, R} = cmr_test:new(<<>>), R end || _ <- lists:seq(1, 1000)],
        exit({made, cmr_test:live_routers(), length(Routers)})
    end),
    %% An earlier test's router may still be freed meanwhile: the counts
    %% can only drop by it.
    receive {'DOWN', Ref, process, Pid, {made, During, 1000}} -> ?assert(During >= 1000) end,
    CollectAll(),
    After = cmr_test:live_routers(),
    ?assert(After =< Before),
    ?assert(During - After >= 1000).
