import java.io.File;
import java.io.IOException;
import java.io.OutputStream;
import java.io.Reader;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import org.jivesoftware.openfire.SessionManager;
import org.jivesoftware.openfire.XMPPServer;
import org.jivesoftware.openfire.container.Plugin;
import org.jivesoftware.openfire.container.PluginManager;
import org.jivesoftware.openfire.session.ClientSession;
import org.jivesoftware.openfire.session.LocalSession;
import org.jivesoftware.openfire.stats.Statistic;
import org.jivesoftware.openfire.stats.StatisticsManager;
import org.jivesoftware.util.JiveGlobals;
import org.logicalcobwebs.proxool.ProxoolFacade;

/**
 * Starts Openfire 4.2.0 for the conformance suite (Maven Central has no
 * starter class nor schema for it).
 *
 * Usage: java -DopenfireHome=HOME Launcher PROPERTIES SQL...
 *
 * When HOME's embedded database is new, runs the SQL files (our schema, then
 * the accounts); on every start, stores PROPERTIES (ports, domain...) as
 * Openfire's database properties, which is where 4.2.0 reads them. Then it
 * runs the server, and stops it cleanly on SIGTERM.
 */
public final class Launcher {
    public static void main(String[] args) throws Exception {
        File home = new File(System.getProperty("openfireHome")).getCanonicalFile();
        // The URL EmbeddedConnectionProvider opens; the same in-process
        // database, as HSQLDB keeps one per path.
        String url = "jdbc:hsqldb:" + new File(home, "embedded-db").getCanonicalPath() + File.separator + "openfire";
        try (Connection db = DriverManager.getConnection(url, "sa", "")) {
            if (!hasTable(db, "OFVERSION")) {
                for (int i = 1; i < args.length; i++) {
                    runScript(db, new String(Files.readAllBytes(Paths.get(args[i])), StandardCharsets.UTF_8));
                }
            }
            setProperties(db, args[0]);
        }
        // Proxool's own shutdown hook would close the pool under the
        // server's feet: stop the server first, then the pool.
        ProxoolFacade.disableShutdownHook();
        XMPPServer server = new XMPPServer();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop();
            ProxoolFacade.shutdown(0);
        }));
    }

    private static boolean hasTable(Connection db, String name) throws SQLException {
        try (ResultSet tables = db.getMetaData().getTables(null, null, name, null)) {
            return tables.next();
        }
    }

    /** Statements end with ';' at the end of a line; '--' starts a comment line. */
    private static void runScript(Connection db, String script) throws SQLException {
        StringBuilder sql = new StringBuilder();
        try (Statement statement = db.createStatement()) {
            for (String line : script.split("\n")) {
                if (line.trim().startsWith("--")) {
                    continue;
                }
                sql.append(line).append('\n');
                if (line.trim().endsWith(";")) {
                    String text = sql.toString().trim();
                    statement.execute(text.substring(0, text.length() - 1));
                    sql.setLength(0);
                }
            }
        }
    }

    private static void setProperties(Connection db, String path) throws Exception {
        Properties properties = new Properties();
        try (Reader reader = Files.newBufferedReader(Paths.get(path), StandardCharsets.UTF_8)) {
            properties.load(reader);
        }
        try (PreparedStatement delete = db.prepareStatement("DELETE FROM ofProperty WHERE name=?");
             PreparedStatement insert = db.prepareStatement(
                     "INSERT INTO ofProperty (name, propValue, encrypted) VALUES (?, ?, 0)")) {
            for (Map.Entry<Object, Object> entry : properties.entrySet()) {
                delete.setString(1, (String) entry.getKey());
                delete.executeUpdate();
                insert.setString(1, (String) entry.getKey());
                insert.setString(2, (String) entry.getValue());
                insert.executeUpdate();
            }
        }
    }

    /**
     * Serves what monitoring reads from Openfire, the statistics of
     * StatisticsManager (where the Monitoring plugin samples them, and
     * Openfire 5.1 publishes them over JMX), as text on the interface and
     * port of openfire.xml's cmrSuite.statistics: GET /statistics gives one
     * line per statistic, KEY TYPE PARTIAL SAMPLE UNITS NAME,
     * tab-separated, by key, each sampled now (so, as with Monitoring, a
     * "rate" statistic of Openfire's own starts again from zero). GET
     * /sessions gives the server's own view of its client sessions.
     *
     * On 4.2.0 from Central it also stands for the admin console, which
     * Central does not carry: 4.2.0's plugin monitor needs a plugin named
     * "admin" (plugins/admin/plugin.xml names this class), and the client
     * port opens after its first pass. With an Openfire installation, whose
     * own admin console runs, it is a plugin of its own.
     */
    public static final class AdminConsole implements Plugin {
        private HttpServer http;

        @Override
        public void initializePlugin(PluginManager manager, File pluginDirectory) {
            String host = JiveGlobals.getXMLProperty("cmrSuite.statistics.interface", "127.0.0.1");
            int port = JiveGlobals.getXMLProperty("cmrSuite.statistics.port", 9090);
            try {
                http = HttpServer.create(new InetSocketAddress(host, port), 0);
            } catch (IOException e) {
                throw new IllegalStateException("statistics stand-in: cannot listen on " + host + ":" + port, e);
            }
            http.createContext("/statistics", AdminConsole::statistics);
            http.createContext("/sessions", AdminConsole::sessions);
            http.start();
        }

        /**
         * GET /sessions: one line per client session of this server, its
         * address and whether the server holds it waiting for XEP-0198
         * resumption (detached), as the server itself knows it.
         */
        private static void sessions(HttpExchange exchange) throws IOException {
            StringBuilder text = new StringBuilder();
            for (ClientSession session : SessionManager.getInstance().getSessions()) {
                boolean detached = session instanceof LocalSession && ((LocalSession) session).isDetached();
                text.append(session.getAddress()).append('\t').append(detached).append('\n');
            }
            reply(exchange, text);
        }

        private static void statistics(HttpExchange exchange) throws IOException {
            StringBuilder text = new StringBuilder();
            Map<String, Statistic> byKey = new TreeMap<>();
            for (Map.Entry<String, Statistic> entry : StatisticsManager.getInstance().getAllStatistics()) {
                byKey.put(entry.getKey(), entry.getValue());
            }
            for (Map.Entry<String, Statistic> entry : byKey.entrySet()) {
                Statistic statistic = entry.getValue();
                text.append(entry.getKey()).append('\t').append(statistic.getStatType())
                        .append('\t').append(statistic.isPartialSample())
                        .append('\t').append(statistic.sample())
                        .append('\t').append(statistic.getUnits())
                        .append('\t').append(statistic.getName()).append('\n');
            }
            reply(exchange, text);
        }

        private static void reply(HttpExchange exchange, CharSequence text) throws IOException {
            byte[] body = text.toString().getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        }

        @Override
        public void destroyPlugin() {
            http.stop(0);
        }
    }
}
