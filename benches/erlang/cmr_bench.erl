%%% NIF overhead per pick (make bench-erlang): cmr:pick/6 on a hot account
%%% (4 sessions, roundrobin) against cmr_test:noop/6 (the NIF's test build),
%%% a NIF that does nothing, with the same arguments. Best of 7 runs of
%%% 1,000,000 calls, in ns.
-module(cmr_bench).
-export([main/0]).

-define(N, 1000000).

main() ->
    {ok, R} = cmr:new(<<"default=roundrobin">>),
    [ok = cmr:register(R, <<"user-0@example.org/node-", (integer_to_binary(I))/binary>>, I, 1, <<>>, true)
     || I <- lists:seq(1, 4)],
    Args = [R, <<"user-0@example.org">>, <<"chat">>, <<"sensor-17@things.example.net/probe">>, <<>>, false],
    Empty = best(fun () -> loop(fun cmr_test:noop/6, Args, ?N) end),
    Pick = best(fun () -> loop(fun cmr:pick/6, Args, ?N) end),
    io:format("erlang-nif: empty NIF ~.1f ns, cmr:pick ~.1f ns, overhead beyond the empty NIF ~.1f ns~n",
              [Empty, Pick, Pick - Empty]),
    halt(0).

best(Run) ->
    lists:min([element(1, timer:tc(Run)) * 1000 / ?N || _ <- lists:seq(1, 7)]).

loop(_, _, 0) -> ok;
loop(F, [A, B, C, D, E, G] = Args, N) -> F(A, B, C, D, E, G), loop(F, Args, N - 1).
