# nabla: `make` builds the libraries and examples, `make test` runs the test
# suite twice (plain, then under AddressSanitizer and UBSan), `make demo`
# trains a small network and draws its graph.  See README.md.

CC       ?= cc
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
BUILD    ?= build
OPT      ?= -O3 -g
SANITIZE ?=

PKGS     := openblas libgvc zlib
CPPFLAGS += -Iinclude -D_DEFAULT_SOURCE
CFLAGS   += -std=c11 $(OPT) -fPIC -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            $(SANITIZE) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
TEST_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

LIB_SRC  := $(sort $(wildcard src/tensor/*.c src/graph/*.c src/ops/*.c src/train/*.c src/data/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
HEADERS  := $(sort $(wildcard include/*.h src/*.h src/*/*.h))
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
BENCHES  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(sort $(wildcard tests/test_*.c)))
# The C++ layer's test (include/nabla.hpp), as C++17, C++20, and C++11
# without exceptions (errors then flow as in C): see its rule below.
HPP_TESTS := $(addprefix $(BUILD)/tests/,test_hpp test_hpp_cxx20 test_hpp_noexcept)
TESTS    += $(HPP_TESTS)
TEST_SUPPORT := tests/support.c
TORCH_DIFF := $(BUILD)/tests/torch_diff
TORCH_DIFF_SRC := tests/torch_diff.c tests/torch_diff_ops.c tests/torch_diff_nn.c tests/torch_diff_opt.c

# Data-parallel training over MPI (include/nabla_mpi.h, libnabla_mpi):
# built when OpenMPI's development files are installed (apt-get install
# libopenmpi-dev openmpi-bin); the core library never depends on MPI.
HAVE_MPI   := $(shell pkg-config --exists ompi-c 2>/dev/null && echo yes)
MPI_CFLAGS := $(patsubst -I%,-isystem %,$(if $(HAVE_MPI),$(shell pkg-config --cflags ompi-c)))
MPI_LIBS   := $(if $(HAVE_MPI),$(shell pkg-config --libs ompi-c))
MPI_LIBS_BUILT := $(if $(HAVE_MPI),$(BUILD)/libnabla_mpi.a $(BUILD)/libnabla_mpi.so)
MPI_OBJ    := $(BUILD)/obj/src/mpi/distributed.o
MPI_TESTS  := $(if $(HAVE_MPI),$(BUILD)/tests/mpi/test_distributed)

# Quiet rules; `make V=1` shows the commands.
Q := $(if $(V),,@)

.PHONY: all lib examples tests torch-diff test test-plain test-sanitize demo deps-build deps-test deps-fuzz deps-static golden docs bench fuzz fuzz-build fuzz-replay check-static \
        install uninstall clean deb

all: lib examples

lib: $(BUILD)/libnabla.a $(BUILD)/libnabla.so $(MPI_LIBS_BUILT)
examples: $(EXAMPLES)
tests: $(TESTS) $(MPI_TESTS) $(TORCH_DIFF)

# The kernels may evaluate both sides of a select, which lets loops with
# conditions (relu, clamping, the NaN checks of src/ops/expf.h) vectorise.
# No IEEE result changes; only floating-point traps, which nabla never
# enables, could fire early.
$(BUILD)/obj/src/ops/%.o: CFLAGS += -fno-trapping-math
# The optimizers' square roots: an instruction, not a call per element that
# might set errno (their argument is never negative).
$(BUILD)/obj/src/train/optimizer.o: CFLAGS += -fno-trapping-math -fno-math-errno

$(BUILD)/obj/src/mpi/%.o: CPPFLAGS += $(MPI_CFLAGS)
$(BUILD)/obj/src/mpi/%.o: include/nabla_mpi.h

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libnabla.a: $(LIB_OBJ)
	@rm -f $@
	@echo "  AR      $@"
	$(Q)ar rcs $@ $^

$(BUILD)/libnabla.so: $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libnabla.so.0 -o $@ $^ $(LDLIBS)

$(BUILD)/libnabla_mpi.a: $(MPI_OBJ)
	@rm -f $@
	@echo "  AR      $@"
	$(Q)ar rcs $@ $^

$(BUILD)/libnabla_mpi.so: $(MPI_OBJ) $(BUILD)/libnabla.so
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libnabla_mpi.so.0 -o $@ $(MPI_OBJ) -L$(BUILD) -lnabla $(MPI_LIBS) $(LDLIBS)

$(BUILD)/tests/mpi/%: tests/mpi/%.c $(BUILD)/libnabla_mpi.a $(BUILD)/libnabla.a include/nabla_mpi.h $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(MPI_CFLAGS) $(CFLAGS) $< -o $@ $(BUILD)/libnabla_mpi.a $(BUILD)/libnabla.a $(MPI_LIBS) $(LDLIBS)

# mlp trains over MPI (--distributed) when libnabla_mpi is built.
$(BUILD)/examples/mlp: CPPFLAGS += $(if $(HAVE_MPI),-DNB_WITH_MPI $(MPI_CFLAGS))
$(BUILD)/examples/mlp: EXAMPLE_LIBS = $(if $(HAVE_MPI),$(BUILD)/libnabla_mpi.a $(MPI_LIBS))
$(BUILD)/examples/mlp: $(if $(HAVE_MPI),$(BUILD)/libnabla_mpi.a include/nabla_mpi.h)

$(BUILD)/examples/%: examples/%.c examples/cli.h examples/png.h examples/heart.h examples/fashion.h \
                     examples/gpt_model.h examples/gpt_text.h examples/silu_op.h $(BUILD)/libnabla.a \
                     $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ $(EXAMPLE_LIBS) $(BUILD)/libnabla.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c bench/bench_common.h examples/gpt_model.h examples/silu_op.h $(BUILD)/libnabla.a $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ $(BUILD)/libnabla.a $(LDLIBS)

# ADOL-C, the reference of bench_scalar (bench/adolc_projectile.cpp): built
# when Debian's libadolc-dev is installed (apt-get install libadolc-dev), a
# bench-only dependency; bench/run.py says the column is skipped otherwise.
CXX        ?= c++
HAVE_ADOLC := $(wildcard /usr/include/adolc/adolc.h)
ADOLC_BENCH := $(if $(HAVE_ADOLC),$(BUILD)/bench/adolc_projectile)

$(BUILD)/bench/bench_scalar $(BUILD)/bench/bench_recompute $(BUILD)/tests/test_recompute $(BUILD)/tests/test_replay $(HPP_TESTS): bench/projectile.h bench/projectile_tape.h

# The same projectile through include/nabla.hpp (C++17), timed beside it.
$(BUILD)/bench/bench_scalar_hpp: bench/bench_scalar_hpp.cpp bench/projectile.h bench/bench_common.h include/nabla.hpp \
                                 $(BUILD)/libnabla.a
	@mkdir -p $(dir $@)
	@echo "  CXX     $@"
	$(Q)$(CXX) -std=c++17 $(CPPFLAGS) $(OPT) -pedantic -Wall -Wextra -Werror -Ibench $< -o $@ $(BUILD)/libnabla.a \
	    $(LDLIBS)

$(BUILD)/bench/adolc_projectile: bench/adolc_projectile.cpp bench/projectile.h
	@mkdir -p $(dir $@)
	@echo "  CXX     $@"
	$(Q)$(CXX) -std=c++17 $(OPT) -Wall -Wextra -Werror -Ibench $< -o $@ -ladolc

# Benchmarks beside their references (bare CBLAS, PyTorch when installed):
# see bench/run.py.  `make bench QUICK=1` for a short run, `make bench ONLY=gpt`
# for the GPT and attention tables alone, `make bench ONLY=scalar` for the
# projectile beside ADOL-C.
bench: deps-build $(BENCHES) $(BUILD)/bench/bench_scalar_hpp $(ADOLC_BENCH)
	@/usr/bin/python3 bench/run.py $(BUILD) $(if $(QUICK),--quick --rounds 3,) $(if $(ONLY),--only $(ONLY),)

$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT) tests/support.h tests/dot_support.h examples/silu_op.h $(BUILD)/libnabla.a $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) -Isrc $(CFLAGS) $< $(TEST_SUPPORT) -o $@ $(BUILD)/libnabla.a \
	    $(LDLIBS) $(TEST_LIBS)

$(BUILD)/tests/test_hpp: HPP_STD := -std=c++17
$(BUILD)/tests/test_hpp_cxx20: HPP_STD := -std=c++20
$(BUILD)/tests/test_hpp_noexcept: HPP_STD := -std=c++11 -fno-exceptions
$(HPP_TESTS): tests/test_hpp.cpp include/nabla.hpp $(BUILD)/libnabla.a $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  CXX     $@"
	$(Q)$(CXX) $(HPP_STD) $(CPPFLAGS) $(OPT) $(SANITIZE) -pedantic -Wall -Wextra -Werror $< -o $@ \
	    $(BUILD)/libnabla.a $(LDLIBS) $(TEST_LIBS)

# The catalogue's parts (tests/test_catalogue*.c) share their row, runner
# and helpers.
$(filter $(BUILD)/tests/test_catalogue%,$(TESTS)): tests/catalogue.h

# The differential test against PyTorch (tests/torch_diff.sh): the
# generator of random graphs, optimizer runs and refusals, which
# tests/torch_diff.py rebuilds in torch.  GRAPHS and SEED for long runs.
$(TORCH_DIFF): $(TORCH_DIFF_SRC) tests/torch_diff.h $(BUILD)/libnabla.a $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(TORCH_DIFF_SRC) -o $@ $(BUILD)/libnabla.a $(LDLIBS)

GRAPHS ?= 20000
SEED   ?= 1
torch-diff: $(TORCH_DIFF)
	@tests/torch_diff.sh $(BUILD) $(GRAPHS) $(SEED)

deps-build:
	@scripts/deps.sh build
deps-test:
	@scripts/deps.sh test

# Fuzzing with libFuzzer (clang): each target runs FUZZ_SECONDS from its
# seed corpus in fuzz/corpus; a crash, leak or sanitizer report fails.
# The library is built with ASan and UBSan (no recovery: a report stops the
# run) and a cap of 256 MiB per allocation, so that a huge but valid
# request is refused (NB_ERR_MEMORY) rather than ending the fuzzer.
# `make fuzz-replay` (part of `make test`) runs every corpus input once.
FUZZ_SECONDS ?= 60
FUZZERS := csv idx params safetensors graph
FUZZ_SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=undefined
fuzz-build: deps-fuzz
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang OPT="-O1 -g" \
	    SANITIZE="-fsanitize=fuzzer-no-link $(FUZZ_SANITIZE) -DNB_MAX_ALLOCATION='(256UL << 20)'" lib
	@set -e; for f in $(FUZZERS); do \
	    clang $(CPPFLAGS) -std=c11 -O1 -g -fsanitize=fuzzer $(FUZZ_SANITIZE) \
	        $(shell pkg-config --cflags $(PKGS) 2>/dev/null) fuzz/fuzz_$$f.c -o build/fuzz/fuzz_$$f \
	        build/fuzz/libnabla.a $(LDLIBS); \
	done

fuzz: fuzz-build
	@set -e; for f in $(FUZZERS); do \
	    mkdir -p build/fuzz/corpus/$$f build/fuzz/artifacts; cp fuzz/corpus/$$f/* build/fuzz/corpus/$$f/; \
	    echo "fuzzing $$f for $(FUZZ_SECONDS) s"; \
	    if LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp build/fuzz/fuzz_$$f \
	        -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=build/fuzz/artifacts/$$f- \
	        build/fuzz/corpus/$$f > build/fuzz/$$f.log 2>&1; then \
	        grep -E '^Done' build/fuzz/$$f.log; \
	    else \
	        tail -n 40 build/fuzz/$$f.log; echo "fuzz: $$f failed; the input is in build/fuzz/artifacts/"; \
	        echo "fuzz: 0 passed, 1 failed"; exit 1; \
	    fi; \
	done; echo "fuzz: $(words $(FUZZERS)) passed, 0 failed"

# Every seed and every input a fuzzer once failed on, run once (with clang;
# skipped with a message without it).
fuzz-replay:
	@if scripts/deps.sh fuzz >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory fuzz-build >/dev/null || exit 1; \
	    pass=0; for f in $(FUZZERS); do \
	        if LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp build/fuzz/fuzz_$$f fuzz/corpus/$$f/* \
	            > build/fuzz/$$f-replay.log 2>&1; then pass=$$((pass + 1)); \
	        else tail -n 40 build/fuzz/$$f-replay.log; echo "fuzz-replay: $$f failed"; \
	            echo "fuzz-replay: $$pass passed, 1 failed"; exit 1; fi; \
	    done; echo "fuzz-replay: $$pass passed, 0 failed ($$(ls fuzz/corpus/*/* | wc -l) inputs)"; \
	else echo "fuzz-replay: skipped (apt-get install clang libclang-rt-14-dev)"; fi

deps-fuzz:
	@scripts/deps.sh fuzz

# Static checks: the whole tree built with clang (-Werror too), cppcheck and
# clang-tidy (.clang-tidy) on src/, valgrind memcheck on the examples, and
# the thread tests (tapes on several threads, nabla's own pool) under
# ThreadSanitizer.
VALGRIND := valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
            --suppressions=tests/valgrind.supp
check-static: deps-static
	@$(MAKE) --no-print-directory BUILD=build/clang CC=clang lib examples tests
	cppcheck --quiet --enable=warning,performance,portability --std=c11 --inline-suppr \
	    -Iinclude -Isrc $(patsubst -isystem,-I,$(MPI_CFLAGS)) -DOMPI_SKIP_MPICXX=1 --error-exitcode=1 src/
	clang-tidy --quiet --checks=-clang-analyzer-optin.mpi.MPI-Checker $(LIB_SRC) $(if $(HAVE_MPI),src/mpi/distributed.c) -- -std=c11 -Iinclude -Isrc -D_DEFAULT_SOURCE \
	    $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(MPI_CFLAGS)
	@$(MAKE) --no-print-directory examples
	@mkdir -p build/valgrind
	$(VALGRIND) $(BUILD)/examples/gradient_descent --steps 3 --dot build/valgrind/gd.dot >/dev/null
	$(VALGRIND) $(BUILD)/examples/forward3 --html build/valgrind/f3.html >/dev/null
	$(VALGRIND) $(BUILD)/examples/logreg --epochs 20 >/dev/null
	$(VALGRIND) $(BUILD)/examples/demo --epochs 3 --out build/valgrind >/dev/null 2>&1
	@$(MAKE) --no-print-directory BUILD=build/tsan CC=clang OPT="-O1 -g" SANITIZE="-fsanitize=thread" \
	    build/tsan/tests/test_threads
	NB_TEST_ONE_BLAS_CORE=1 TSAN_OPTIONS=halt_on_error=1 build/tsan/tests/test_threads >build/tsan/test_threads.log 2>&1 \
	    || { tail -n 40 build/tsan/test_threads.log; exit 1; }
	@echo "static: 5 passed, 0 failed"

deps-static:
	@scripts/deps.sh static

# The whole suite, then again under AddressSanitizer and UBSan.
test: deps-test
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-sanitize
	@$(MAKE) --no-print-directory fuzz-replay

test-plain: tests lib examples
	@scripts/run-tests.sh "plain" $(TESTS)
	@$(if $(HAVE_MPI),tests/mpi.sh $(BUILD),echo "mpi: skipped (apt-get install libopenmpi-dev openmpi-bin)")
	@tests/examples.sh $(BUILD)
	@tests/headers.sh $(BUILD)
	@tests/browser.sh $(BUILD)
	@tests/op_table.sh
	@tests/torch_diff.sh $(BUILD) 500 1
	@tests/install.sh $(BUILD)
	@tests/deb.sh $(BUILD)
	@$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(BUILD)/install-check >/dev/null
	@scripts/check-readme.sh $(BUILD) $(CURDIR)/$(BUILD)/install-check

test-sanitize:
	@$(MAKE) --no-print-directory BUILD=build/sanitize OPT="-O1 -g -fno-omit-frame-pointer" \
	    SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all" tests examples
	@export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0; \
	    scripts/run-tests.sh "sanitize" $(patsubst $(BUILD)/%,build/sanitize/%,$(TESTS)) && \
	    tests/examples.sh build/sanitize

# Rewrites the golden pictures the tests compare against (review the diff).
golden: examples
	$(BUILD)/examples/gradient_descent --steps 2 --dot tests/golden/gradient_descent.dot >/dev/null
	$(BUILD)/examples/forward3 --dot tests/golden/forward3.dot >/dev/null

# The gallery of lessons: graphs and backward steppers, in build/docs.
docs: deps-build examples
	@scripts/gallery.sh $(BUILD) $(BUILD)/docs

demo: deps-build $(BUILD)/examples/demo
	@mkdir -p $(BUILD)/demo
	$(BUILD)/examples/demo --out $(BUILD)/demo

# After the copy, scripts/install-loader.sh runs ldconfig for a prefix in
# the loader's path (as root, without DESTDIR) or says how to link and run
# against any other prefix (an rpath, LD_LIBRARY_PATH, nabla-static.pc).
NB_VERSION = $(shell sed -n 's/#define NB_VERSION "\(.*\)"/\1/p' include/nabla.h)
install: lib
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/nabla.h include/nabla_nn.h include/nabla_train.h include/nabla_op.h include/nabla_kernel.h include/nabla_graph.h \
	    include/nabla.hpp $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libnabla.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libnabla.so $(DESTDIR)$(LIBDIR)/libnabla.so.0
	ln -sf libnabla.so.0 $(DESTDIR)$(LIBDIR)/libnabla.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(NB_VERSION)|' nabla.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/nabla.pc
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(NB_VERSION)|' nabla-static.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/nabla-static.pc
ifneq ($(HAVE_MPI),)
	install -m 644 include/nabla_mpi.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(BUILD)/libnabla_mpi.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libnabla_mpi.so $(DESTDIR)$(LIBDIR)/libnabla_mpi.so.0
	ln -sf libnabla_mpi.so.0 $(DESTDIR)$(LIBDIR)/libnabla_mpi.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@VERSION@|$(NB_VERSION)|' nabla_mpi.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/nabla_mpi.pc
endif
	@scripts/install-loader.sh "$(DESTDIR)" "$(LIBDIR)"

# Debian packages (debian/): libnabla0, libnabla-mpi0 and libnabla-dev in
# $(BUILD)/deb, checked by lintian (scripts/deb.sh; tests/deb.sh installs
# and uses them).
deb:
	@scripts/deb.sh $(BUILD)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/nabla.h $(DESTDIR)$(PREFIX)/include/nabla_nn.h $(DESTDIR)$(PREFIX)/include/nabla_train.h $(DESTDIR)$(PREFIX)/include/nabla_op.h \
	      $(DESTDIR)$(PREFIX)/include/nabla_kernel.h $(DESTDIR)$(PREFIX)/include/nabla_graph.h $(DESTDIR)$(PREFIX)/include/nabla.hpp $(DESTDIR)$(PREFIX)/include/nabla_mpi.h $(DESTDIR)$(LIBDIR)/libnabla_mpi.a \
	      $(DESTDIR)$(LIBDIR)/libnabla_mpi.so $(DESTDIR)$(LIBDIR)/libnabla_mpi.so.0 \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/nabla_mpi.pc \
	      $(DESTDIR)$(LIBDIR)/libnabla.a \
	      $(DESTDIR)$(LIBDIR)/libnabla.so $(DESTDIR)$(LIBDIR)/libnabla.so.0 \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/nabla.pc $(DESTDIR)$(LIBDIR)/pkgconfig/nabla-static.pc

clean:
	rm -rf build
