%%% cmr_test: the test build of the cmr NIF (c_src/cmr_nif.c built with
%%% -DCMR_TEST), for the tests and benchmarks only: the shipped cmr has
%%% none of this.
-module(cmr_test).

-export([new/1, live_routers/0, noop/6]).

-on_load(init/0).

%% The test NIF lies beside this module's beam, with libcmr.so.0.
init() ->
    erlang:load_nif(filename:join(filename:dirname(code:which(?MODULE)), "cmr_test_nif"), 0).

-define(NIF, erlang:nif_error({not_loaded, ?MODULE})).

%% @doc cmr:new/1, counted by live_routers/0 until the garbage collector
%% frees the router.
-spec new(binary()) -> {ok, reference()} | cmr:error().
new(_Options) -> ?NIF.

%% @doc How many routers made by new/1 the garbage collector has not freed
%% yet (a leak check).
-spec live_routers() -> non_neg_integer().
live_routers() -> ?NIF.

%% @doc A NIF that does nothing, with cmr:pick/6's arity: the baseline of
%% the binding's overhead benchmark.
-spec noop(term(), term(), term(), term(), term(), term()) -> ok.
noop(_, _, _, _, _, _) -> ?NIF.
