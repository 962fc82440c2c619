# cmr: `make demo` shows CMR working; `make test` installs what is missing,
# builds everything and runs every test. See README.md.

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PREFIX ?= /usr/local
CARGO ?= cargo
# The one build every test and shim uses.
TARGET := target/release
BUILD := build
LIB := $(BUILD)/lib
SONAME := libcmr.so.0
CFLAGS := -std=c11 -O2 -g -Wall -Wextra -Werror
# The test clients (slixmpp, pytest) live in a virtualenv.
VENV := .venv
# The server of `make demo` and `make bench-throughput`: prosody, ejabberd or openfire.
HOST ?= prosody


.PHONY: lua lua-tests prosody-module install-prosody prosody-deps conformance-prosody browser-deps web-client
.PHONY: erlang erlang-deps erlang-test-build erlang-tests bench-erlang ejabberd-deps ejabberd-module conformance-ejabberd ejabberd-package install-ejabberd bench-cluster bench-cluster-flood
.PHONY: java java-deps java-tests java-install openfire-module
.PHONY: bench-java
.PHONY: demo-library bench-lua bench-throughput bench-openfire-jfr bench-storm bench-callgrind-prosody bench-scale bench-rss fuzz
.PHONY: FORCE
.PHONY: all lib header check-header install test test-deps lint rust-tests c-tests install-test demo bench clean

all: lib

# Cargo writes only libcmr.so; lay out the real name and the soname link so
# that programs linked with -lcmr find libcmr.so.0 without installing.
lib:
	$(CARGO) build --release
	mkdir -p $(LIB)
	cp -f $(TARGET)/libcmr.so $(LIB)/libcmr.so.$(VERSION)
	ln -sf libcmr.so.$(VERSION) $(LIB)/$(SONAME)
	ln -sf $(SONAME) $(LIB)/libcmr.so
	cp -f $(TARGET)/libcmr.a $(LIB)/libcmr.a

# Regenerates include/ from src/ffi (build.rs runs cbindgen).
header:
	CMR_HEADER_DIR=$(CURDIR)/include $(CARGO) build --release

# Fails when include/ differs from what the code generates now.
check-header:
	@tmp=$$(mktemp -d) && \
	CMR_HEADER_DIR=$$tmp $(CARGO) build --release --quiet && \
	diff -u include/cmr.h $$tmp/cmr.h && diff -u include/cmr_cdef.h $$tmp/cmr_cdef.h && \
	rm -rf $$tmp && echo "include/ is up to date" || \
	{ echo "include/ is stale: run 'make header' and commit it" >&2; exit 1; }

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(LIB)/libcmr.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libcmr.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libcmr.so
	install -m 0644 $(LIB)/libcmr.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 include/cmr.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' cmr.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cmr.pc

test-deps:
	@scripts/install-deps.sh gcc libc6-dev make valgrind pkg-config lua5.4 liblua5.4-dev luajit python3-venv
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (rustup)" >&2; exit 1; }

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --quiet -- -D warnings

rust-tests:
	$(CARGO) test --release

# The Lua binding, laid out as it is installed: the Lua files, the 5.4 C
# module, the generated FFI declarations and the library, side by side.
LUA := $(BUILD)/lua
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)

lua: lib $(LUA)/cmr_core.so $(LUA)/cmr_cdef.lua
	cp -f bindings/lua/cmr.lua bindings/lua/cmr_ffi.lua $(LUA)/
	cp -f $(LIB)/libcmr.so.$(VERSION) $(LUA)/$(SONAME)

$(LUA)/cmr_core.so: bindings/lua/cmr_core.c include/cmr.h $(LIB)/libcmr.so.$(VERSION)
	mkdir -p $(LUA)
	$(CC) $(CFLAGS) -fPIC -shared $(LUA_CFLAGS) -Iinclude $< -L$(LIB) -l:$(SONAME) -Wl,-rpath,'$$ORIGIN' -o $@

$(LUA)/cmr_cdef.lua: include/cmr_cdef.h
	mkdir -p $(LUA)
	{ echo '-- Generated from include/cmr_cdef.h by the Makefile; do not edit.'; \
	  echo 'return [==['; cat $<; echo ']==]'; } > $@

# mod_cmr as Prosody loads it: a plugin directory with the module, the
# binding and the library.
PROSODY_MODULE := $(BUILD)/prosody/mod_cmr
PROSODY_PLUGIN_DIR ?= $(PREFIX)/lib/prosody/modules

prosody-module: lua
	mkdir -p $(PROSODY_MODULE)
	cp -f bindings/prosody/mod_cmr/mod_cmr.lua bindings/prosody/mod_cmr/README.md $(PROSODY_MODULE)/
	cp -f $(LUA)/cmr.lua $(LUA)/cmr_ffi.lua $(LUA)/cmr_cdef.lua $(PROSODY_MODULE)/
	@# install writes a new file: a server running the old one (a test's,
	@# a benchmark's) keeps its mapping intact, where cp -f crashed it.
	install -m 0755 $(LUA)/cmr_core.so $(LUA)/$(SONAME) $(PROSODY_MODULE)/

install-prosody: prosody-module
	install -d $(DESTDIR)$(PROSODY_PLUGIN_DIR)/mod_cmr
	install -m 0644 $(PROSODY_MODULE)/*.lua $(PROSODY_MODULE)/README.md $(DESTDIR)$(PROSODY_PLUGIN_DIR)/mod_cmr/
	install -m 0755 $(PROSODY_MODULE)/cmr_core.so $(PROSODY_MODULE)/$(SONAME) $(DESTDIR)$(PROSODY_PLUGIN_DIR)/mod_cmr/

lua-tests: lua
	LUA_PATH='$(LUA)/?.lua;;' LUA_CPATH='$(LUA)/?.so;;' lua5.4 tests/lua/binding_test.lua
	LUA_PATH='$(LUA)/?.lua;;' luajit tests/lua/binding_test.lua

# The Erlang binding: the cmr module and its NIF, laid out as an OTP
# library (ebin/, priv/ with the NIF and libcmr.so.0 beside it).
ERL_BUILD := $(BUILD)/erlang/cmr
ERL_INCLUDE := /usr/lib/erlang/usr/include

erlang-deps:
	@scripts/install-deps.sh erlang-base erlang-dev erlang-eunit

erlang: lib $(ERL_BUILD)/priv/cmr_nif.so $(ERL_BUILD)/ebin/cmr.beam

$(ERL_BUILD)/priv/cmr_nif.so: bindings/erlang/c_src/cmr_nif.c include/cmr.h $(LIB)/libcmr.so.$(VERSION)
	mkdir -p $(ERL_BUILD)/priv
	cp -f $(LIB)/libcmr.so.$(VERSION) $(ERL_BUILD)/priv/$(SONAME)
	$(CC) $(CFLAGS) -fPIC -shared -I$(ERL_INCLUDE) -Iinclude $< -L$(ERL_BUILD)/priv -l:$(SONAME) \
	    -Wl,-rpath,'$$ORIGIN' -o $@

$(ERL_BUILD)/ebin/cmr.beam: bindings/erlang/src/cmr.erl
	mkdir -p $(ERL_BUILD)/ebin
	erlc -Werror -o $(ERL_BUILD)/ebin $<

# The Java binding: the JNI shim with libcmr.a linked in (one
# self-contained .so, its Rust symbols kept inside), and org.cmr built and
# tested by Maven (JUnit 5) against it.
JAVA_BUILD := $(BUILD)/java
JNI_SO := $(JAVA_BUILD)/libcmr_jni.so
JAVA_HOME ?= $(shell dirname $$(dirname $$(readlink -f $$(command -v javac 2>/dev/null || echo /usr/bin/javac))))
MVN := mvn -B --no-transfer-progress

java-deps:
	@scripts/install-deps.sh default-jdk-headless maven

# The tests' build of the shim adds what only tests and benchmarks call
# (-DCMR_TEST: org.cmr.EmptyPick); the shipped one must not export it.
JNI_TEST_SO := $(JAVA_BUILD)/libcmr_jni_test.so
JNI_LINK = $(CC) $(CFLAGS) -fPIC -shared -I$(JAVA_HOME)/include -I$(JAVA_HOME)/include/linux -Iinclude $< \
	    $(LIB)/libcmr.a -Wl,--exclude-libs,ALL -Wl,--gc-sections -Wl,--strip-debug -Wl,-z,defs -lpthread -ldl -lm -lc -lgcc_s -o $@

$(JNI_SO): bindings/java/src/main/c/cmr_jni.c include/cmr.h $(LIB)/libcmr.a
	mkdir -p $(JAVA_BUILD)
	$(JNI_LINK)
	@! nm -D --defined-only $@ | grep -i emptypick || { echo "error: $@ exports a test hook" >&2; exit 1; }

$(JNI_TEST_SO): bindings/java/src/main/c/cmr_jni.c include/cmr.h $(LIB)/libcmr.a
	mkdir -p $(JAVA_BUILD)
	$(JNI_LINK) -DCMR_TEST

java: java-deps lib $(JNI_SO)

# The JVM runs the tests with -Xcheck:jni; what it reports about the shim's
# JNI use (surefire keeps it in a .dumpstream file) fails them.
java-tests: java $(JNI_TEST_SO)
	cd bindings/java && $(MVN) clean verify -Dcmr.jni=$(CURDIR)/$(JNI_TEST_SO)
	@! grep -rn -m3 "in native method\|JNI functions in the scope" bindings/java/target/surefire-reports/ \
	    || { echo "error: -Xcheck:jni reported the JNI shim" >&2; exit 1; }

# mod_cmr for Openfire: the plugin jar, built by Maven against xmppserver
# 4.2.0 with the binding (installed into the local Maven repository first)
# and the JNI library inside.
OPENFIRE_JAR := $(BUILD)/openfire/cmr-openfire.jar

# The binding's jar in the local Maven repository, for the projects that
# depend on it (the plugin; the JMH benchmark, with its tests' jar).
java-install: java
	cd bindings/java && $(MVN) -q install -DskipTests -Dcmr.jni=$(CURDIR)/$(JNI_SO)

openfire-module: java-install
	cd bindings/openfire && $(MVN) -q package -Dcmr.jni=$(CURDIR)/$(JNI_SO)
	mkdir -p $(dir $(OPENFIRE_JAR))
	cp -f bindings/openfire/target/cmr-openfire.jar $(OPENFIRE_JAR)

# Openfire 4.2.0 from Maven Central, for the conformance suite's Openfire
# host: the server's jars (MINA 2.0.21 for Java 17, JAXB for SASL) and the
# launcher that creates our schema and starts it, in build/openfire/server.
OPENFIRE_HOST := tests/conformance/hosts/openfire
OPENFIRE_SERVER := $(BUILD)/openfire/server
.PHONY: openfire-deps conformance-openfire

openfire-deps: java-deps $(OPENFIRE_SERVER)/classes/Launcher.class

$(OPENFIRE_SERVER)/lib/.copied: $(OPENFIRE_HOST)/pom.xml | java-deps
	rm -rf $(OPENFIRE_SERVER)/lib
	$(MVN) -q -f $< dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(OPENFIRE_SERVER)/lib
	touch $@

$(OPENFIRE_SERVER)/classes/Launcher.class: $(OPENFIRE_HOST)/Launcher.java $(OPENFIRE_SERVER)/lib/.copied
	rm -rf $(OPENFIRE_SERVER)/classes && mkdir -p $(OPENFIRE_SERVER)/classes
	javac -Xlint:all,-path -Werror -cp '$(OPENFIRE_SERVER)/lib/*' -d $(OPENFIRE_SERVER)/classes $<

# CMR_OPENFIRE_HOME=/opt/openfire runs it against that Openfire
# installation instead (hosts/openfire.py: it is only read).
conformance-openfire: openfire-deps openfire-module $(VENV)/.installed
	@echo "conformance suite on openfire $(if $(CMR_OPENFIRE_HOME),$(patsubst xmppserver-%.jar,%,$(notdir \
	    $(wildcard $(CMR_OPENFIRE_HOME)/lib/xmppserver-*.jar))) at $(CMR_OPENFIRE_HOME),$(OPENFIRE_VERSION))"
	CMR_HOST=openfire $(VENV)/bin/python -m pytest tests/conformance

# mod_cmr for the installed ejabberd, whatever its version (23.01, 24.12):
# scripts/ejabberd-paths.sh finds it through dpkg, or says to install it.
# Expanded when a recipe runs, so after ejabberd-deps installed it.
EJABBERD_PATHS := scripts/ejabberd-paths.sh
EJABBERD = $(shell $(EJABBERD_PATHS) dir)
ERL_MOD_BUILD := $(BUILD)/erlang/mod_cmr
# Holds the version of ejabberd the beams were built against: rewritten
# (and so the beams rebuilt) only when the installed version changes.
EJABBERD_BUILT := $(ERL_MOD_BUILD)/ejabberd-version

ejabberd-deps:
	@scripts/install-deps.sh ejabberd erlang-dev erlang-eunit

ERL_MOD_SOURCES := $(wildcard bindings/erlang/mod_cmr/src/*.erl)

ejabberd-module: erlang $(ERL_MOD_BUILD)/ebin/mod_cmr.beam

$(EJABBERD_BUILT): FORCE
	@version=$$($(EJABBERD_PATHS) version) && mkdir -p $(dir $@) && \
	if [ "$$(cat $@ 2>/dev/null)" != "$$version" ]; then echo "$$version" > $@; fi

# A module that fails leaves none built, or make would take the others as done.
$(ERL_MOD_BUILD)/ebin/mod_cmr.beam: $(ERL_MOD_SOURCES) $(EJABBERD_BUILT)
	@echo "mod_cmr for ejabberd $$(cat $(EJABBERD_BUILT)) ($(EJABBERD))"
	rm -rf $(ERL_MOD_BUILD)/ebin && mkdir -p $(ERL_MOD_BUILD)/ebin
	erlc -Werror -I $(EJABBERD)/include -I $$($(EJABBERD_PATHS) xmpp-include) -pa $(EJABBERD)/ebin \
	    -o $(ERL_MOD_BUILD)/ebin $(ERL_MOD_SOURCES) || { rm -rf $(ERL_MOD_BUILD)/ebin; exit 1; }

# The ejabberd-contrib package: spec, conf, README, the Erlang sources that
# ejabberd compiles at module_install, and the NIF with libcmr in priv/.
EJABBERD_PACKAGE := $(BUILD)/ejabberd-contrib/mod_cmr
EJABBERD_CONTRIB ?= /var/lib/ejabberd/.ejabberd-modules

ejabberd-package: ejabberd-module
	rm -rf $(EJABBERD_PACKAGE) && mkdir -p $(EJABBERD_PACKAGE)/src $(EJABBERD_PACKAGE)/priv $(EJABBERD_PACKAGE)/conf
	cp -f bindings/erlang/mod_cmr/mod_cmr.spec bindings/erlang/mod_cmr/COPYING $(EJABBERD_PACKAGE)/
	cp -f bindings/erlang/mod_cmr/README.md $(EJABBERD_PACKAGE)/README.txt
	cp -f bindings/erlang/mod_cmr/conf/mod_cmr.yml $(EJABBERD_PACKAGE)/conf/
	cp -f $(ERL_MOD_SOURCES) bindings/erlang/src/cmr.erl $(EJABBERD_PACKAGE)/src/
	cp -f $(ERL_BUILD)/priv/cmr_nif.so $(ERL_BUILD)/priv/$(SONAME) $(EJABBERD_PACKAGE)/priv/

# Puts the package where `ejabberdctl module_install mod_cmr` finds it.
install-ejabberd: ejabberd-package
	install -d $(DESTDIR)$(EJABBERD_CONTRIB)/sources
	rm -rf $(DESTDIR)$(EJABBERD_CONTRIB)/sources/mod_cmr
	cp -r $(EJABBERD_PACKAGE) $(DESTDIR)$(EJABBERD_CONTRIB)/sources/

# The conformance suite against a live ejabberd.
conformance-ejabberd: ejabberd-deps ejabberd-module $(VENV)/.installed
	@echo "conformance suite on ejabberd $$($(PACKAGE_VERSION) ejabberd)"
	CMR_HOST=ejabberd $(VENV)/bin/python -m pytest tests/conformance

# The test build of the same NIF source (-DCMR_TEST): the module cmr_test,
# with the hooks that tests and benchmarks need and cmr does not ship.
ERL_TEST_BUILD := $(BUILD)/erlang/test

erlang-test-build: erlang $(ERL_TEST_BUILD)/cmr_test_nif.so $(ERL_TEST_BUILD)/cmr_test.beam

$(ERL_TEST_BUILD)/cmr_test_nif.so: bindings/erlang/c_src/cmr_nif.c include/cmr.h $(ERL_BUILD)/priv/cmr_nif.so
	mkdir -p $(ERL_TEST_BUILD)
	cp -f $(ERL_BUILD)/priv/$(SONAME) $(ERL_TEST_BUILD)/
	$(CC) $(CFLAGS) -DCMR_TEST -fPIC -shared -I$(ERL_INCLUDE) -Iinclude $< -L$(ERL_TEST_BUILD) -l:$(SONAME) \
	    -Wl,-rpath,'$$ORIGIN' -o $@

$(ERL_TEST_BUILD)/cmr_test.beam: bindings/erlang/test/cmr_test.erl
	mkdir -p $(ERL_TEST_BUILD)
	erlc -Werror -o $(ERL_TEST_BUILD) $<

# With mod_cmr's journal, the one module of it that needs no ejabberd.
erlang-tests: erlang-deps erlang-test-build
	erlc -o $(ERL_TEST_BUILD) bindings/erlang/test/cmr_tests.erl bindings/erlang/mod_cmr/src/mod_cmr_journal.erl \
	    bindings/erlang/test/mod_cmr_journal_tests.erl
	erl -noshell -pa $(ERL_BUILD)/ebin -pa $(ERL_TEST_BUILD) \
	    -eval 'case eunit:test([cmr_tests, mod_cmr_journal_tests], [verbose]) of ok -> halt(0); _ -> halt(1) end'

$(VENV)/.installed: tests/conformance/requirements.txt
	@python3 -m venv $(VENV) || { echo "error: python3 -m venv failed; install python3-venv" >&2; exit 1; }
	$(VENV)/bin/pip install -q --disable-pip-version-check -r $<
	touch $@

prosody-deps:
	@scripts/install-deps.sh prosody lua5.4 liblua5.4-dev luajit

# The browser test's browser: Debian's chromium and its driver, of the same
# version; npm for its web client.
browser-deps:
	@scripts/install-deps.sh chromium chromium-driver
	@command -v npm >/dev/null || scripts/install-deps.sh npm

# The browser test's web client: Converse.js at the version that
# tests/browser/package-lock.json pins, which the test Prosody serves.
WEB_CLIENT := tests/browser/node_modules
web-client: $(WEB_CLIENT)/.package-lock.json

$(WEB_CLIENT)/.package-lock.json: tests/browser/package.json tests/browser/package-lock.json | browser-deps
	cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund

# The conformance suite against a live Prosody, the browser test among it.
conformance-prosody: prosody-deps browser-deps prosody-module web-client $(VENV)/.installed
	@echo "conformance suite on prosody $$($(PACKAGE_VERSION) prosody)"
	CMR_HOST=prosody $(VENV)/bin/python -m pytest tests/conformance

# The server versions the host suites run against (CI prints them after
# each phase).
PACKAGE_VERSION := dpkg-query -W -f='$${Version}' 2>/dev/null
OPENFIRE_VERSION = $(shell sed -n '/<artifactId>xmppserver</{n;s/.*<version>\(.*\)<\/version>.*/\1/p;}' $(OPENFIRE_HOST)/pom.xml)
.PHONY: versions use-backports use-security-updates test-backports
versions:
	@echo "server versions: prosody $$($(PACKAGE_VERSION) prosody || echo none)," \
	    "ejabberd $$($(PACKAGE_VERSION) ejabberd || echo none), openfire $(OPENFIRE_VERSION);" \
	    "libexpat1 $$($(PACKAGE_VERSION) libexpat1 || echo none)"

# Moves this machine to Prosody 13 and ejabberd 24.12 from bookworm-backports
# (as root; only when asked: README.md says how to go back).
use-backports:
	@scripts/use-backports.sh

# Installs the current security updates of the servers and of what they
# depend on, libexpat1 among them (as root; only when asked).
use-security-updates:
	@scripts/use-security-updates.sh

# CI's second phase: the host suites again on what a maintained Debian 12
# runs: the bookworm-backports servers, with the current security updates of
# everything they load; mod_cmr rebuilt for the new ejabberd.
test-backports: use-backports use-security-updates
	$(MAKE) --no-print-directory conformance-prosody conformance-ejabberd

$(BUILD)/bin/abi_test: tests/c/abi_test.c include/cmr.h lib
	mkdir -p $(BUILD)/bin
	$(CC) $(CFLAGS) -pthread -Iinclude $< -L$(LIB) -lcmr -Wl,-rpath,'$$ORIGIN/../lib' -o $@

# The C ABI test, with the bad-stanza corpus, under valgrind.
c-tests: $(BUILD)/bin/abi_test
	valgrind -q --leak-check=full --error-exitcode=1 $(BUILD)/bin/abi_test tests/corpus/stanzas

# `make install` into a throwaway prefix, then build the README's example
# against it with pkg-config alone.
install-test: lib
	@tmp=$$(mktemp -d) && \
	$(MAKE) --no-print-directory install PREFIX=$$tmp >/dev/null && \
	test -L $$tmp/lib/$(SONAME) && test -f $$tmp/lib/pkgconfig/cmr.pc && \
	$(CC) $(CFLAGS) examples/hello.c $$(PKG_CONFIG_PATH=$$tmp/lib/pkgconfig pkg-config --cflags --libs cmr) \
	    -Wl,-rpath,$$tmp/lib -o $$tmp/hello && \
	readelf -d $$tmp/hello | grep -q 'NEEDED.*$(SONAME)' && $$tmp/hello && \
	rm -rf $$tmp && echo "install-test: 1 passed, 0 failed"

test: test-deps lint check-header rust-tests c-tests install-test lua-tests erlang-tests java-tests conformance-prosody \
      conformance-ejabberd conformance-openfire

# The live demo on loopback, with and without mod_cmr.
demo: $(HOST)-deps $(HOST)-module $(VENV)/.installed
	CMR_HOST=$(HOST) $(VENV)/bin/python examples/live_demo.py

# The same scenario inside the library alone, 10,000 messages.
demo-library: lib
	$(CARGO) run --release --quiet --example m2m

# The Lua binding's cost per pick under both interpreters.
bench-lua: lua
	LUA_PATH='$(LUA)/?.lua;;' LUA_CPATH='$(LUA)/?.so;;' lua5.4 benches/lua/pick_bench.lua
	LUA_PATH='$(LUA)/?.lua;;' luajit benches/lua/pick_bench.lua

# The Java binding's cost per pick against an empty native call (JMH).
bench-java: java-install $(JNI_TEST_SO)
	cd benches/java && $(MVN) -q package
	java -Dcmr.jni=$(CURDIR)/$(JNI_TEST_SO) -cp benches/java/target/classes:$$(cat benches/java/target/classpath.txt) \
	    org.openjdk.jmh.Main PickBenchmark

# The NIF's cost per pick.
bench-erlang: erlang-deps erlang-test-build
	mkdir -p $(BUILD)/erlang/bench
	erlc -o $(BUILD)/erlang/bench benches/erlang/cmr_bench.erl
	erl -noshell -pa $(ERL_BUILD)/ebin -pa $(ERL_TEST_BUILD) -pa $(BUILD)/erlang/bench -s cmr_bench main

# A server's throughput with mod_cmr against the same server natively, on
# loopback: HOST=prosody (the default), ejabberd or openfire;
# THROUGHPUT_ARGS=--one-session for native and one session only.
bench-throughput: $(HOST)-deps $(HOST)-module $(VENV)/.installed
	CMR_HOST=$(HOST) $(VENV)/bin/python benches/throughput.py $(THROUGHPUT_ARGS)

# Openfire's native and one-session runs recorded by Java Flight Recorder
# (build/jfr/*.jfr), each setup's top methods printed (benches/jfr_top.py).
bench-openfire-jfr: openfire-deps openfire-module $(VENV)/.installed
	CMR_HOST=openfire $(VENV)/bin/python benches/throughput.py --one-session --jfr $(BUILD)/jfr

# A reconnect storm, natively and with mod_cmr: SESSIONS sessions of one
# account log in at once, then one message (HOST=prosody or ejabberd;
# SESSIONS defaults to what a round does in about a minute).
bench-storm: $(HOST)-deps $(HOST)-module $(VENV)/.installed
	CMR_HOST=$(HOST) $(VENV)/bin/python benches/reconnect_storm.py $(if $(SESSIONS),--sessions $(SESSIONS))

# Instructions per message of a live Prosody under callgrind, natively and
# with mod_cmr (whichever prosody is on PATH); BENCH_ARGS=--profile prints
# a Lua-level profile of each instead.
bench-callgrind-prosody: prosody-deps prosody-module $(VENV)/.installed
	$(VENV)/bin/python benches/callgrind_prosody.py $(BENCH_ARGS)

# ejabberd in a two-node cluster: messages forwarded to the account's home.
bench-cluster: ejabberd-deps ejabberd-module $(VENV)/.installed
	CMR_HOST=ejabberd $(VENV)/bin/python benches/cluster_throughput.py

# A flood of 10 senders through the same cluster: the journal's and the
# mailboxes' peaks.
bench-cluster-flood: ejabberd-deps ejabberd-module $(VENV)/.installed
	CMR_HOST=ejabberd $(VENV)/bin/python benches/cluster_flood.py

# A fuzz campaign of one target (iq, options or abi; RELIABILITY.md):
# cargo-fuzz on nightly Rust, outside `make test`, which replays the kept
# corpus on stable. New inputs go to a scratch copy of the corpus.
FUZZ_TARGET ?= iq
FUZZ_RUNS ?= 10000000
FUZZ_SANITIZER ?= none
FUZZ_MAX_LEN ?= 524288
FUZZ_WORK ?= $(BUILD)/fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 1; }
	rm -rf $(FUZZ_WORK)/$(FUZZ_TARGET) && mkdir -p $(FUZZ_WORK)/$(FUZZ_TARGET)
	cp fuzz/corpus/$(FUZZ_TARGET)/* $(FUZZ_WORK)/$(FUZZ_TARGET)/
	cargo +nightly fuzz run -O -s $(FUZZ_SANITIZER) $(FUZZ_TARGET) $(FUZZ_WORK)/$(FUZZ_TARGET) -- \
	    -runs=$(FUZZ_RUNS) -max_len=$(FUZZ_MAX_LEN) -artifact_prefix=$(FUZZ_WORK)/artifact-$(FUZZ_TARGET)-

# Runs the benchmarks, then prints BENCHMARKS.md's tables from criterion's
# estimates.
bench:
	$(CARGO) bench --bench pick
	$(CARGO) bench --bench memory
	python3 scripts/bench_table.py target/criterion

# What each call costs as one account grows (benches/c/scale.c): picks at
# 4 to 10,000 sessions, session calls at 64 to 50,000 (BENCHMARKS.md).
bench-scale: lib
	mkdir -p $(BUILD)/bin
	$(CC) $(CFLAGS) -Iinclude benches/c/scale.c -L$(LIB) -lcmr -Wl,-rpath,'$$ORIGIN/../lib' \
	    -o $(BUILD)/bin/bench_scale
	$(BUILD)/bin/bench_scale

# The registry's cost in resident memory (benches/c/rss.c): VmRSS growth
# per session at 1,000,000 accounts of 4 sessions, and what stays after.
bench-rss: lib
	mkdir -p $(BUILD)/bin
	$(CC) $(CFLAGS) -std=gnu11 -Iinclude benches/c/rss.c -L$(LIB) -lcmr -Wl,-rpath,'$$ORIGIN/../lib' \
	    -o $(BUILD)/bin/bench_rss
	$(BUILD)/bin/bench_rss

clean:
	$(CARGO) clean
	rm -rf $(BUILD) $(VENV) $(WEB_CLIENT)
