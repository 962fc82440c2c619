package org.cmr.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.concurrent.TimeUnit;
import org.cmr.EmptyPick;
import org.cmr.Router;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * One pick through the binding (lock, JNI, the library) against the same
 * call without the library (lock, JNI, the arrays read in place): their
 * difference is the library's own pick, and emptyPick is the binding's
 * overhead (org.cmr.EmptyPick, from the binding's tests, needs the tests'
 * build of the shim). An account of four sessions, as in benches/pick.rs.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1)
public class PickBenchmark {
    @Param({"roundrobin", "mostactive"})
    public String algorithm;

    private Router router;
    private final byte[] recipient = "sensors@example.org".getBytes(StandardCharsets.UTF_8);
    private final byte[] type = "chat".getBytes(StandardCharsets.UTF_8);
    private final byte[] sender = "probe@example.org/x".getBytes(StandardCharsets.UTF_8);
    private final long[] out = new long[8];

    @Setup
    public void setUp() throws IOException {
        Router.loadLibrary(Paths.get(System.getProperty("cmr.jni")));
        router = new Router("");
        for (int i = 0; i < 4; i++) {
            router.register("sensors@example.org/node-" + i, i + 1, 0, null, true);
        }
        router.setAlgorithm("sensors@example.org", algorithm);
    }

    @TearDown
    public void tearDown() {
        router.close();
    }

    @Benchmark
    public int pick() {
        return router.pick(recipient, type, sender, null, true, out);
    }

    @Benchmark
    public int emptyPick() {
        return EmptyPick.emptyPick(router, recipient, type, sender, null, true, out);
    }
}
