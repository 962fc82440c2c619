%%% cmr: XEP-0354 Customizable Message Routing, the Erlang binding.
%%%
%%% A thin NIF over the cmr C ABI (include/cmr.h). Binaries in, binaries or
%%% atoms out; every failure is {error, {Status, Message}} where Status is
%%% an atom (badarg, invalid_jid, not_found, ...) and Message a binary that
%%% says what was wrong. A router is freed by the garbage collector, and may
%%% be used from any number of processes at once. Status `panic' means the
%%% router caught a bug in cmr: it refuses every call from then on, and the
%%% host routes messages itself until it makes a new router.
-module(cmr).

-export([new/1, register/6, unregister/3, session_gone/3, touch/3, set_load/4, set_hibernating/4, pick/6,
         get_algorithm/2, set_algorithm/3, handle_iq/2, routing_command/0, routing_command/3, admin_command/0,
         admin_form/1, admin_form_value/2, choose_for/3, choice_note/3, algorithm_for/3, disco_features/1,
         stats/2, metric_series/0, metric_values/1, max_picks_per_message/0, activity_interval_ms/0,
         version/0]).

-on_load(init/0).

-type router() :: reference().
-type error() :: {error, {atom(), binary()}}.
%% One series of the router's figures, as the library describes it (see
%% cmr_metric_series in include/cmr.h): binaries, label and label_value
%% empty when the family has one series.
-type metric_series() :: #{key := binary(), metric := binary(), family := binary(), unit := binary(),
                           label := binary(), label_value := binary(), help := binary(),
                           kind := counter | gauge}.
%% One of the commands a host offers through its ad-hoc framework (XEP-0050):
%% its node and the name clients list.
-type command() :: #{node := binary(), name := binary()}.
-export_type([router/0, error/0, metric_series/0, command/0]).

%% The NIF lies in ../priv beside ebin/, with libcmr.so.0 next to it.
init() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    erlang:load_nif(filename:join([Ebin, "..", "priv", "cmr_nif"]), 0).

-define(NIF, erlang:nif_error({not_loaded, ?MODULE})).

%% @doc A router with a policy: whitespace-separated key=value options
%% (offered, default, user_change, hints, prefix; see the cmr README).
-spec new(binary()) -> {ok, router()} | error().
new(_Options) -> ?NIF.

%% @doc Registers a session or updates its presence (an upsert). new_account:
%% this call gave the account its first session (restore its algorithm now).
-spec register(router(), binary(), non_neg_integer(), integer(), binary(), boolean()) ->
    ok | new_account | error().
register(_Router, _FullJid, _Token, _Priority, _Show, _Available) -> ?NIF.

%% @doc Removes the session if Token still owns its resource. Given the
%% account's bare JID, removes whichever of its sessions Token owns.
-spec unregister(router(), binary(), non_neg_integer()) -> ok | error().
unregister(_Router, _FullJid, _Token) -> ?NIF.

%% @doc Removes a session that pick/6 chose and the host found gone, as
%% unregister/3 does, and counts it in the metrics' gone_sessions (also
%% when another process removed it first: then {error, {not_found, _}}).
-spec session_gone(router(), binary(), non_neg_integer()) -> ok | error().
session_gone(_Router, _Jid, _Token) -> ?NIF.

%% @doc Reports activity of the session (for mostactive).
-spec touch(router(), binary(), non_neg_integer()) -> ok | error().
touch(_Router, _FullJid, _Token) -> ?NIF.

%% @doc Marks the session as waiting for XEP-0198 resumption, or as back. It
%% gets messages only when no other session is eligible while it waits.
-spec set_hibernating(router(), binary(), non_neg_integer(), boolean()) -> ok | error().
set_hibernating(_Router, _FullJid, _Token, _Hibernating) -> ?NIF.

%% @doc Reports the session's load, e.g. its unacknowledged XEP-0198 queue.
-spec set_load(router(), binary(), non_neg_integer(), non_neg_integer()) -> ok | error().
set_load(_Router, _FullJid, _Token, _Load) -> ?NIF.

%% @doc The sessions that get a message to the bare JID Recipient, or
%% not_routed when the server routes it itself. Type is the message's type
%% (<<>> when missing), Hint the algorithm of a cmr hint (<<>> when none).
-spec pick(router(), binary(), binary(), binary(), binary(), boolean()) ->
    [non_neg_integer()] | not_routed | error().
pick(_Router, _Recipient, _Type, _Sender, _Hint, _SenderIsLocal) -> ?NIF.

-spec get_algorithm(router(), binary()) -> {ok, binary()} | error().
get_algorithm(_Router, _BareJid) -> ?NIF.

%% @doc Sets an account's algorithm (by URI or short name), as the host
%% restores a persisted choice.
-spec set_algorithm(router(), binary(), binary()) -> ok | error().
set_algorithm(_Router, _BareJid, _Algorithm) -> ?NIF.

%% @doc Answers a XEP-0354 IQ given as a whole stanza; Changed says the
%% account's algorithm changed (persist it).
-spec handle_iq(router(), binary()) -> {ok, binary(), boolean()} | not_mine | error().
handle_iq(_Router, _Xml) -> ?NIF.

%% @doc The routing command users run (routing_command/3).
-spec routing_command() -> command().
routing_command() -> ?NIF.

%% @doc Runs the routing command for the session Requester (its full JID):
%% with Submitted <<>> the XEP-0004 form to show (the command goes on,
%% `executing'); with the form the client submitted, the outcome under the
%% policy of a XEP-0354 set: completed with an info note (Changed: persist
%% the account's algorithm, as after handle_iq/2), or refused with the note
%% that says why, nothing changed. A form that is not this command's is
%% {error, {invalid_argument, Message}}: the host answers <bad-request/>.
-spec routing_command(router(), binary(), binary()) ->
    {form, binary()} | {completed, binary(), boolean()} | {refused, binary()} | error().
routing_command(_Router, _Requester, _Submitted) -> ?NIF.

%% @doc The admin command (admin_form/1): only the host's administrators may
%% run it, which the host checks.
-spec admin_command() -> command().
admin_command() -> ?NIF.

%% @doc The admin command's XEP-0004 form: the account (`accountjid') and the
%% offered algorithms (`algorithm').
-spec admin_form(router()) -> {ok, binary()} | error().
admin_form(_Router) -> ?NIF.

%% @doc The value of the field Var (<<"accountjid">> or <<"algorithm">>) of a
%% submitted admin form, once the whole form is checked: anything else is
%% {error, {invalid_argument, Message}}, naming it.
-spec admin_form_value(binary(), binary()) -> {ok, binary()} | error().
admin_form_value(_Submitted, _Var) -> ?NIF.

%% @doc An operator's choice of algorithm (URI or short name) for an
%% account, not bound by user_change: applied at once when a session of the
%% account is registered; either way the URI to persist. An algorithm not
%% offered is refused, naming it.
-spec choose_for(router(), binary(), binary()) -> {ok, binary()} | error().
choose_for(_Router, _BareJid, _Algorithm) -> ?NIF.

%% @doc The note of a completed admin command that chose Algorithm (as
%% choose_for/3 gave it) for the account, in the routing command's words.
-spec choice_note(router(), binary(), binary()) -> {ok, binary()} | error().
choice_note(_Router, _BareJid, _Algorithm) -> ?NIF.

%% @doc The URI of the algorithm that applies to an account: its sessions'
%% when one is registered, else Stored (the persisted choice, <<>> for none)
%% when offered, else the default.
-spec algorithm_for(router(), binary(), binary()) -> {ok, binary()} | error().
algorithm_for(_Router, _BareJid, _Stored) -> ?NIF.

%% @doc The disco#info features to advertise, one per line.
-spec disco_features(router()) -> {ok, binary()} | error().
disco_features(_Router) -> ?NIF.

%% @doc The account's per-session figures, a tab-separated table.
-spec stats(router(), binary()) -> {ok, binary()} | error().
stats(_Router, _BareJid) -> ?NIF.

%% @doc Every series of a router's figures, in the order of metric_values/1:
%% messages routed and left to the server (per algorithm, or none), picked
%% sessions found gone, IQs answered, sessions and accounts registered now.
-spec metric_series() -> [metric_series()].
metric_series() -> ?NIF.

%% @doc The router's figures since it was made, in the order of
%% metric_series/0.
-spec metric_values(router()) -> {ok, [non_neg_integer()]} | error().
metric_values(_Router) -> ?NIF.

%% @doc How many picks a message gets in all, counting those after a picked
%% session was found gone.
-spec max_picks_per_message() -> pos_integer().
max_picks_per_message() -> ?NIF.

%% @doc Activity of a session is reported at most once per this interval.
-spec activity_interval_ms() -> pos_integer().
activity_interval_ms() -> ?NIF.

-spec version() -> binary().
version() -> ?NIF.
