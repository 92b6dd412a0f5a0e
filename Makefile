# cgnet — the front door. Every target first makes sure the build dependencies are
# installed (scripts/deps.sh; with --fuzz for the targets that build the fuzz targets
# with clang and libFuzzer), then drives CMake.
#
#   make / make build      configure + build into build/ (RelWithDebInfo: -O2 -g)
#   make test              plain, ASan+UBSan and TSan builds, each with its ctest suite,
#                          then a fuzz build (clang + libFuzzer) that runs each fuzz
#                          target for a few seconds
#   make test-plain | test-asan | test-tsan | test-fuzz
#   make fuzz              every fuzz target, FUZZ_SECONDS each (default 60)
#   make test-long         plain build, then the slow tests (ctest label "long")
#   make demo              build, then scripts/demo.sh
#   make bench             build, then bench/run.sh (echo, HTTP, regression figures, TLS,
#                          WebSocket echo) and bench/report.py -> docs/benchmarks.md;
#                          knobs: bash bench/run.sh --help (UDP runs by name: bash
#                          bench/run.sh udp)
#   make bench-sweep       build, then bench/sweep.sh (connections x message size) and report
#   make install PREFIX=/usr/local
#   make format | format-check
#   make clean

PREFIX     ?= /usr/local
BUILD_TYPE ?= RelWithDebInfo
BUILD_DIR  ?= build
CMAKE_ARGS ?=
CTEST_ARGS ?=
export CMAKE_ARGS CTEST_ARGS   # read by scripts/check-tests.sh
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

MAKEFLAGS += --no-print-directory

DEPS := bash scripts/deps.sh
FORMAT_DIRS := src include tests examples bench fuzz
FORMAT_FILES = $(shell find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)

.DEFAULT_GOAL := build
.PHONY: all build deps deps-bench deps-fuzz deps-test test test-plain test-asan test-tsan test-fuzz fuzz test-long demo bench bench-sweep install format \
	format-check clean

all: build

deps:
	@$(DEPS)

# clang and the libFuzzer runtime as well: only the fuzz builds need them.
deps-fuzz:
	@$(DEPS) --fuzz

# Everything `make test` runs: the fuzz builds' tools, and Node's ws package, which a
# WebSocket example's test talks to.
deps-test:
	@$(DEPS) --fuzz --node

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: deps-test
	@bash scripts/check-tests.sh plain asan tsan fuzz

test-plain: deps
	@bash scripts/check-tests.sh plain

test-asan: deps
	@bash scripts/check-tests.sh asan

test-tsan: deps
	@bash scripts/check-tests.sh tsan

test-fuzz: deps-fuzz
	@bash scripts/check-tests.sh fuzz

FUZZ_SECONDS ?= 60
fuzz: deps-fuzz
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Same configuration as check-tests.sh's plain variant (build/), so the two share a build.
test-long: deps
	cmake -S . -B $(BUILD_DIR) -DCGNET_SANITIZE= -DCGNET_BUILD_TESTS=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)
	cd $(BUILD_DIR) && ctest -L long --output-on-failure -j1 --no-tests=error $(CTEST_ARGS)

demo: build
	bash scripts/demo.sh $(BUILD_DIR)

# The bench peers (libuv, libevent) are found at configure time, so their packages go in
# before the build: on a fresh machine the first `make bench` then has every peer
# (Node's ws package too: a WebSocket peer).
deps-bench:
	@$(DEPS) --bench --node

bench: deps-bench build
	bash bench/run.sh

bench-sweep: deps-bench build
	bash bench/sweep.sh

# The prefix is given at configure time too, so that cgnet.pc names it.
install: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)
	cmake --install $(BUILD_DIR)

format:
	@$(DEPS) --format
	@files="$(FORMAT_FILES)"; [ -z "$$files" ] || clang-format -i $$files

format-check:
	@$(DEPS) --format
	@files="$(FORMAT_FILES)"; [ -z "$$files" ] || clang-format --dry-run --Werror $$files

clean:
	rm -rf build build-asan build-tsan build-fuzz
