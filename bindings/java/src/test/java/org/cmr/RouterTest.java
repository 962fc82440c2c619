package org.cmr;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

class RouterTest {
    private static final String ACCOUNT = "sensors@example.org";
    private static final String RR = "urn:xmpp:cmr:roundrobin";
    private Router router;

    @BeforeAll
    static void load() throws IOException {
        Router.loadLibrary(Paths.get(System.getProperty("cmr.jni")));
    }

    @BeforeEach
    void open() {
        router = new Router("");
    }

    @AfterEach
    void close() {
        router.close();
    }

    private static CmrException refused(String status, String inMessage, Executable call) {
        CmrException e = assertThrows(CmrException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains(inMessage), e.getMessage());
        return e;
    }

    private int pick(long[] out) {
        return router.pick(ACCOUNT, "chat", "probe@example.org/x", null, true, out);
    }

    @Test
    void versionIsTheLibrarys() {
        assertTrue(Router.version().matches("\\d+\\.\\d+\\.\\d+.*"), Router.version());
    }

    @Test
    void roundRobinThroughTheBinding() {
        assertTrue(router.register(ACCOUNT + "/a", 1, 0, null, true));
        assertFalse(router.register(ACCOUNT + "/b", 2, 0, "chat", true));
        router.setAlgorithm(ACCOUNT, "roundrobin");
        assertEquals(RR, router.algorithm(ACCOUNT));
        long[] out = new long[1];
        List<Long> picked = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            assertEquals(1, pick(out));
            picked.add(out[0]);
        }
        assertEquals(List.of(1L, 2L, 1L, 2L), picked);
        String stats = router.stats(ACCOUNT);
        assertTrue(stats.startsWith("resource\trouted"), stats);
        assertTrue(stats.contains("a\t2\t"), stats);
    }

    @Test
    void notRoutedIsZeroAndAllAsksForRoom() {
        assertEquals(0, pick(new long[1]), "no session: the host routes");
        router.register(ACCOUNT + "/a", 1, 0, null, true);
        router.register(ACCOUNT + "/b", 2, 0, null, true);
        router.setAlgorithm(ACCOUNT, "all");
        long[] one = {-7};
        assertEquals(2, pick(one), "the number needed");
        assertEquals(-7, one[0], "nothing written");
        long[] two = new long[2];
        assertEquals(2, pick(two));
        java.util.Arrays.sort(two);
        assertArrayEquals(new long[] {1, 2}, two);
        assertEquals(2, router.pick(ACCOUNT, null, null, null, false, new long[0]));
    }

    @Test
    void everyBadInputIsAClearException() {
        refused("invalid_option", "bogus", () -> new Router("bogus=1"));
        refused("invalid_jid", "no resource", () -> router.register(ACCOUNT, 1, 0, null, true));
        refused("invalid_jid", "", () -> router.register("@@/x", 1, 0, null, true));
        byte[] latin1 = "caf\u00e9@example.org/x".getBytes(StandardCharsets.ISO_8859_1);
        refused("invalid_utf8", "", () -> router.register(latin1, 1, 0, null, true));
        refused("invalid_argument", "show", () -> router.register(ACCOUNT + "/a", 1, 0, "bored", true));
        refused("invalid_argument", "priority", () -> router.register(ACCOUNT + "/a", 1, 500, null, true));
        assertThrows(IllegalArgumentException.class, () -> router.setLoad(ACCOUNT + "/a", 1, -1));
        router.register(ACCOUNT + "/a", 1, 0, null, true);
        refused("unknown_algorithm", "nosuch", () -> router.setAlgorithm(ACCOUNT, "nosuch"));
        refused("not_found", "", () -> router.unregister(ACCOUNT + "/a", 99));
        refused("invalid_xml", "", () -> router.handleIq("<iq type='get'><query"));
        assertEquals(0, router.pick("not a jid@", null, null, null, true, new long[1]), "no such account");
        assertThrows(NullPointerException.class, () -> router.register((byte[]) null, 1, 0, null, true));
        assertThrows(NullPointerException.class, () -> router.handleIq((byte[]) null));
        assertThrows(NullPointerException.class, () -> new Router(null));
        assertEquals(1, pick(new long[1]), "the refused calls changed nothing");
        assertEquals("urn:xmpp:cmr:all", router.algorithm(ACCOUNT));
    }

    @Test
    void aLongMessageArrivesWhole() {
        String resource = new String(new char[1000]).replace('\0', 'r');
        CmrException e = refused("not_found", "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
                () -> router.unregister(ACCOUNT + "/" + resource, 99));
        assertTrue(e.getMessage().endsWith("(1031 bytes in all) is not registered"), e.getMessage());
        // The longest kind: two inputs of control characters, quoted whole.
        String controls = new String(new char[900]).replace('\0', '\u0001');
        CmrException option = refused("invalid_option", "(700 bytes in all)",
                () -> new Router(controls.substring(0, 700) + "=" + controls.substring(1)));
        assertTrue(option.getMessage().contains("(899 bytes in all)"), option.getMessage());
    }

    @Test
    void iqs() {
        router.register(ACCOUNT + "/a", 1, 0, null, true);
        String set = "<iq type='set' id='1' from='" + ACCOUNT + "/a' to='" + ACCOUNT + "'>"
                + "<cmr xmlns='urn:xmpp:cmr:0' algorithm='" + RR + "'/></iq>";
        IqAnswer answer = router.handleIq(set);
        assertNotNull(answer);
        assertTrue(answer.changed());
        assertTrue(answer.stanza().endsWith("type='result'/>"), answer.stanza());
        assertEquals(RR, router.algorithm(ACCOUNT));
        String get = "<iq type='get' id='2' from='" + ACCOUNT + "/a' to='" + ACCOUNT + "'>"
                + "<query xmlns='urn:xmpp:cmr:0'/></iq>";
        IqAnswer query = router.handleIq(get);
        assertFalse(query.changed());
        assertTrue(query.stanza().contains(RR), query.stanza());
        assertNull(router.handleIq("<iq type='result' id='3'/>"), "not CMR's");
        assertArrayEquals(new String[] {"urn:xmpp:cmr:0", "urn:xmpp:cmr:hints:0"}, router.discoFeatures());
    }

    private static String submit(String fields) {
        return "<x xmlns='jabber:x:data' type='submit'>" + fields + "</x>";
    }

    private static String field(String var, String... values) {
        StringBuilder field = new StringBuilder("<field var='" + var + "'>");
        for (String value : values) {
            field.append("<value>").append(value).append("</value>");
        }
        return field.append("</field>").toString();
    }

    @Test
    void theCommandsAreTheLibrarys() {
        assertEquals("urn:xmpp:cmr:0#routing", Command.routing().node());
        assertEquals("Message routing", Command.routing().name());
        assertEquals("urn:xmpp:cmr:0#account-routing", Command.admin().node());
        assertEquals("Set an account's message routing", Command.admin().name());
    }

    @Test
    void theRoutingCommand() {
        router.register(ACCOUNT + "/a", 1, 0, null, true);
        CommandAnswer form = router.routingCommand(ACCOUNT + "/a", null);
        assertEquals(CommandAnswer.Stage.FORM, form.stage());
        assertFalse(form.changed());
        assertTrue(form.text().startsWith("<x xmlns='jabber:x:data' type='form'"), form.text());
        assertTrue(form.text().contains("a: 0 (0%)"), form.text());
        CommandAnswer done = router.routingCommand(ACCOUNT + "/a", submit(field("algorithm", RR)));
        assertEquals(CommandAnswer.Stage.COMPLETED, done.stage());
        assertTrue(done.changed());
        assertTrue(done.text().contains("Round robin"), done.text());
        assertEquals(RR, router.algorithm(ACCOUNT));
        CommandAnswer refusedAnswer = router.routingCommand(ACCOUNT + "/a", submit(field("algorithm", "urn:x:no")));
        assertEquals(CommandAnswer.Stage.REFUSED, refusedAnswer.stage());
        assertFalse(refusedAnswer.changed());
        assertTrue(refusedAnswer.text().contains("urn:x:no"), refusedAnswer.text());
        CmrException bogus = refused("invalid_argument", "bogus",
                () -> router.routingCommand(ACCOUNT + "/a", submit(field("algorithm", RR) + field("bogus", "x"))));
        assertEquals("invalid_argument: " + bogus.reason(), bogus.getMessage(), "the library's message alone");
        refused("invalid_argument", "algorithm",
                () -> router.routingCommand(ACCOUNT + "/a", submit(field("algorithm", RR, "urn:xmpp:cmr:all"))));
        refused("invalid_jid", "", () -> router.routingCommand(ACCOUNT, null));
        assertThrows(NullPointerException.class, () -> router.routingCommand((byte[]) null, null));
        assertEquals(RR, router.algorithm(ACCOUNT), "the refused calls changed nothing");
        try (Router fixed = new Router("user_change=false")) {
            fixed.register(ACCOUNT + "/a", 1, 0, null, true);
            CommandAnswer notAllowed = fixed.routingCommand(ACCOUNT + "/a", submit(field("algorithm", RR)));
            assertEquals(CommandAnswer.Stage.REFUSED, notAllowed.stage());
            assertTrue(notAllowed.text().contains("does not let users change"), notAllowed.text());
            assertEquals("urn:xmpp:cmr:all", fixed.algorithm(ACCOUNT));
        }
    }

    @Test
    void aLongFormArrivesWhole() {
        for (int i = 0; i < 300; i++) {
            router.register(ACCOUNT + "/node-" + i, i + 1, 0, null, true);
        }
        CommandAnswer form = router.routingCommand(ACCOUNT + "/node-0", null);
        assertEquals(CommandAnswer.Stage.FORM, form.stage());
        assertTrue(form.text().length() > 4096, "beyond the shim's stack buffer");
        assertTrue(form.text().contains("node-299: 0 (0%)") && form.text().endsWith("</x>"), form.text());
    }

    @Test
    void theAdminCommand() {
        String form = router.adminForm();
        assertTrue(form.contains("var='accountjid'") && form.contains("var='algorithm'"), form);
        String submitted = submit(field("accountjid", "other@example.org") + field("algorithm", "weighted"));
        assertEquals("other@example.org", Router.adminFormValue(submitted, "accountjid"));
        assertEquals("weighted", Router.adminFormValue(submitted, "algorithm"));
        refused("invalid_argument", "bogus", () -> Router.adminFormValue(
                submit(field("accountjid", "a@example.org") + field("algorithm", RR) + field("bogus", "x")),
                "algorithm"));
        // Offline: written to persist, applied at the account's first session.
        assertEquals("urn:xmpp:cmr:weighted", router.chooseFor("other@example.org", "weighted"));
        assertEquals("Messages to other@example.org are now routed by: Weighted by priority.",
                router.choiceNote("other@example.org", "urn:xmpp:cmr:weighted"));
        assertEquals("urn:xmpp:cmr:all", router.algorithmFor("other@example.org", null), "nothing stored");
        assertEquals("urn:xmpp:cmr:weighted", router.algorithmFor("other@example.org", "urn:xmpp:cmr:weighted"));
        // Online: applied at once.
        router.register(ACCOUNT + "/a", 1, 0, null, true);
        assertEquals(RR, router.chooseFor(ACCOUNT, RR));
        assertEquals(RR, router.algorithm(ACCOUNT));
        assertEquals(RR, router.algorithmFor(ACCOUNT, "urn:xmpp:cmr:weighted"), "the sessions' applies");
        refused("unknown_algorithm", "fastest", () -> router.chooseFor(ACCOUNT, "fastest"));
        try (Router narrow = new Router("offered=all,mostactive user_change=false")) {
            refused("not_offered", "roundrobin", () -> narrow.chooseFor(ACCOUNT, "roundrobin"));
            assertEquals("urn:xmpp:cmr:mostactive", narrow.chooseFor(ACCOUNT, "mostactive"), "not bound by user_change");
        }
        assertEquals(RR, router.algorithm(ACCOUNT), "the refused calls changed nothing");
    }

    /** The value of the series `key` now. */
    private long metric(String key) {
        long[] values = router.metricValues();
        List<MetricSeries> series = Router.metricSeries();
        assertEquals(series.size(), values.length);
        for (int i = 0; i < values.length; i++) {
            if (series.get(i).key().equals(key)) {
                return values[i];
            }
        }
        throw new AssertionError("no series " + key);
    }

    @Test
    void metricSeriesAreTheLibrarys() {
        List<MetricSeries> series = Router.metricSeries();
        assertEquals(2 * Router.algorithms().size() + 6, series.size());
        MetricSeries routed = series.get(0);
        assertEquals("routed_all", routed.key());
        assertEquals("cmr_messages_routed_total", routed.metric());
        assertEquals("routed", routed.family());
        assertEquals("messages", routed.unit());
        assertEquals("algorithm", routed.label());
        assertEquals("all", routed.labelValue());
        assertFalse(routed.help().isEmpty());
        assertTrue(routed.counter());
        MetricSeries accounts = series.get(series.size() - 1);
        assertEquals("accounts", accounts.key());
        assertEquals("", accounts.label());
        assertEquals("", accounts.labelValue());
        assertFalse(accounts.counter());
        assertEquals(series.size(), series.stream().map(MetricSeries::key).distinct().count(), "unique keys");
    }

    @Test
    void metricsCountWhatTheCallsDid() {
        List<String> algorithms =
                List.of("all", "mostactive", "roundrobin", "weighted", "random", "sticky", "leastloaded");
        assertEquals(algorithms, Router.algorithms());
        assertTrue(java.util.Arrays.stream(router.metricValues()).allMatch(n -> n == 0));

        router.register(ACCOUNT + "/a", 1, 0, null, true);
        router.register(ACCOUNT + "/b", 2, 0, null, true);
        router.setAlgorithm(ACCOUNT, "roundrobin");
        for (int i = 0; i < 3; i++) {
            assertEquals(1, pick(new long[1]));
        }
        // Nothing eligible: left to the server under the account's algorithm.
        router.register("lonely@example.org/x", 3, -1, null, true);
        router.setAlgorithm("lonely@example.org", "weighted");
        assertEquals(0, router.pick("lonely@example.org", "chat", null, null, true, new long[1]));
        // No session at all, or a type the library leaves to the server: no
        // algorithm applied.
        assertEquals(0, router.pick("nobody@example.org", "chat", null, null, true, new long[1]));
        assertEquals(0, router.pick(ACCOUNT, "headline", null, null, true, new long[1]));
        String from = " from='" + ACCOUNT + "/b' to='" + ACCOUNT + "'";
        assertTrue(router.handleIq("<iq type='get' id='1'" + from + "><query xmlns='urn:xmpp:cmr:0'/></iq>")
                .stanza().contains("type='result'"));
        assertTrue(router.handleIq("<iq type='set' id='2'" + from
                + "><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:example:fastest'/></iq>").stanza()
                .contains("item-not-found"));
        refused("invalid_xml", "", () -> router.handleIq("<iq type='get'><query"));
        router.sessionGone(ACCOUNT, 1);
        // Already gone (another thread got there first): counted all the same.
        refused("not_found", "", () -> router.sessionGone(ACCOUNT + "/a", 1));

        for (String algorithm : algorithms) {
            assertEquals(algorithm.equals("roundrobin") ? 3 : 0, metric("routed_" + algorithm), algorithm);
            assertEquals(algorithm.equals("weighted") ? 1 : 0, metric("left_to_server_" + algorithm), algorithm);
        }
        assertEquals(2, metric("left_to_server_none"));
        assertEquals(2, metric("gone_sessions"));
        assertEquals(1, metric("iq_results"));
        assertEquals(2, metric("iq_errors"));
        assertEquals(2, metric("sessions"), "b and lonely");
        assertEquals(2, metric("accounts"));
        assertEquals(1, pick(new long[1]), "the gone session is no longer picked");
        assertEquals(4, metric("routed_roundrobin"));
    }

    @Test
    void sessionGoneRefusesBadInput() {
        refused("invalid_jid", "", () -> router.sessionGone("@@/x", 1));
        byte[] latin1 = "caf\u00e9@example.org/x".getBytes(StandardCharsets.ISO_8859_1);
        refused("invalid_utf8", "", () -> router.sessionGone(latin1, 1));
        assertThrows(NullPointerException.class, () -> router.sessionGone((byte[]) null, 1));
        assertEquals(0, metric("gone_sessions"), "refused calls count nothing");
    }

    @Test
    void theRoutingConstantsAreTheLibrarys() {
        assertEquals(8, Router.maxPicksPerMessage());
        assertEquals(1000, Router.activityIntervalMillis());
    }

    /** The benchmark's baseline works (in the tests' build of the shim). */
    @Test
    void anEmptyPickReadsTheArgumentsAndPicksNothing() {
        byte[] account = ACCOUNT.getBytes(StandardCharsets.UTF_8);
        assertEquals(1, EmptyPick.emptyPick(router, account, null, null, null, true, new long[1]));
        assertEquals(0, metric("left_to_server_none"), "the library was not called");
    }

    @Test
    void aClosedRouterRefusesCalls() {
        Router closed = new Router("");
        closed.close();
        assertThrows(IllegalStateException.class, () -> closed.register(ACCOUNT + "/a", 1, 0, null, true));
        assertThrows(IllegalStateException.class, () -> closed.pick(ACCOUNT, null, null, null, true, new long[1]));
        assertThrows(IllegalStateException.class, closed::metricValues);
        assertThrows(IllegalStateException.class, () -> closed.sessionGone(ACCOUNT + "/a", 1));
    }

    /**
     * Threads pick for one account while each also registers and
     * unregisters a session of its own: every pick lands on a session, and
     * what the threads saw adds up to the library's stats.
     */
    @Test
    void manyThreadsAtOnce() throws Exception {
        int threads = 8;
        int rounds = 4000;
        int stable = 4;
        for (int s = 1; s <= stable; s++) {
            router.register(ACCOUNT + "/stable" + s, s, 0, null, true);
        }
        router.setAlgorithm(ACCOUNT, "roundrobin");
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        CountDownLatch start = new CountDownLatch(1);
        List<Future<long[]>> done = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            int thread = t;
            done.add(pool.submit(() -> {
                // Picks per stable token (1..stable), and at 0 those that
                // went to a short-lived session.
                long[] seen = new long[stable + 1];
                long[] out = new long[1];
                start.await();
                for (int i = 0; i < rounds; i++) {
                    String jid = ACCOUNT + "/churn" + thread;
                    long token = 1_000_000L * (thread + 1) + i;
                    boolean newAccount = router.register(jid, token, 0, null, true);
                    assertFalse(newAccount, "the stable sessions stay");
                    assertEquals(1, router.pick(ACCOUNT, "chat", null, null, true, out));
                    seen[out[0] <= stable ? (int) out[0] : 0]++;
                    router.unregister(jid, token);
                }
                return seen;
            }));
        }
        start.countDown();
        long[] seen = new long[stable + 1];
        for (Future<long[]> f : done) {
            long[] one = f.get();
            for (int s = 0; s <= stable; s++) {
                seen[s] += one[s];
            }
        }
        pool.shutdown();
        long total = 0;
        for (long n : seen) {
            total += n;
        }
        assertEquals((long) threads * rounds, total);
        String[] rows = router.stats(ACCOUNT).trim().split("\n");
        assertEquals(stable + 1, rows.length, String.join("\n", rows));
        for (int r = 1; r < rows.length; r++) {
            String[] cells = rows[r].split("\t");
            int token = Integer.parseInt(cells[6]);
            assertEquals(seen[token], Long.parseLong(cells[1]), "routed to token " + token);
        }
    }

    /** A plugin reload: a new class loader loads the binding again. */
    @Test
    void aNewClassLoaderLoadsTheBindingAgain() throws Exception {
        URL classes = Paths.get(System.getProperty("cmr.classes")).toUri().toURL();
        for (int reload = 0; reload < 3; reload++) {
            try (URLClassLoader loader = new URLClassLoader(new URL[] {classes}, null)) {
                Class<?> routerClass = loader.loadClass("org.cmr.Router");
                assertFalse(routerClass == Router.class);
                routerClass.getMethod("loadLibrary", java.nio.file.Path.class)
                        .invoke(null, Paths.get(System.getProperty("cmr.jni")));
                Object other = routerClass.getConstructor(String.class).newInstance("");
                Method register = routerClass.getMethod(
                        "register", String.class, long.class, int.class, String.class, boolean.class);
                assertEquals(true, register.invoke(other, ACCOUNT + "/a", 5L, 0, null, true));
                Method pick = routerClass.getMethod("pick", String.class, String.class, String.class,
                        String.class, boolean.class, long[].class);
                long[] out = new long[1];
                assertEquals(1, pick.invoke(other, ACCOUNT, null, null, null, true, out));
                assertEquals(5L, out[0]);
                routerClass.getMethod("close").invoke(other);
            }
        }
    }
}
