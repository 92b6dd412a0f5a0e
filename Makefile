# cgnet — the front door. Every target first makes sure the build dependencies are
# installed (scripts/deps.sh), then drives CMake.
#
#   make / make build      configure + build into build/ (RelWithDebInfo: -O2 -g)
#   make test              plain, ASan+UBSan and TSan builds, each with its ctest suite
#   make test-plain | test-asan | test-tsan
#   make demo              build, then scripts/demo.sh
#   make install PREFIX=/usr/local
#   make format | format-check
#   make clean
#
# (make bench: to come.)

PREFIX     ?= /usr/local
BUILD_TYPE ?= RelWithDebInfo
BUILD_DIR  ?= build
CMAKE_ARGS ?=
CTEST_ARGS ?=
export CMAKE_ARGS CTEST_ARGS   # read by scripts/check-tests.sh
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

MAKEFLAGS += --no-print-directory

DEPS := bash scripts/deps.sh
FORMAT_DIRS := src include tests examples bench
FORMAT_FILES = $(shell find $(FORMAT_DIRS) -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)

.DEFAULT_GOAL := build
.PHONY: all build deps test test-plain test-asan test-tsan demo install format format-check clean

all: build

deps:
	@$(DEPS)

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS)

test: deps
	@bash scripts/check-tests.sh plain asan tsan

test-plain: deps
	@bash scripts/check-tests.sh plain

test-asan: deps
	@bash scripts/check-tests.sh asan

test-tsan: deps
	@bash scripts/check-tests.sh tsan

demo: build
	bash scripts/demo.sh $(BUILD_DIR)

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
	rm -rf build build-asan build-tsan
