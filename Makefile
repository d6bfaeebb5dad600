# Pagoda build.  `make` builds build/pagoda (CPU only); `make CUDA=1` adds the CUDA backend.
# Sources are found by wildcard: a new .c under src/<layer>/ is built without editing this file.
#   make test        all tests (C unit tests, Python differential/server tests), ends with "N passed, N failed"
#   make SAN=1 ...   builds with ASan+UBSan into build-san/
#   make fuzz        builds libFuzzer targets (clang) into build-fuzz/
#   make cuda-objs   compiles the CUDA objects only (works without a GPU)

CC      ?= cc
NVCC    ?= nvcc
CUDA    ?= 0
SAN     ?= 0
O       ?= build
ifeq ($(SAN),1)
O       := build-san
endif

PKGS     := jansson libpcre2-8 libutf8proc libmicrohttpd
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -pthread -Isrc \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I/usr/include/x86_64-linux-gnu/openblas-pthread
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lopenblas -lm -lpthread -ldl
ARCH_FLAGS ?= -mavx2 -mfma -mf16c
ifneq ($(shell uname -m),x86_64)
ARCH_FLAGS :=
endif
CFLAGS   += $(ARCH_FLAGS)
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

LIB_SRC  := $(filter-out src/cli/%,$(wildcard src/*/*.c src/*/*/*.c))
CLI_SRC  := $(wildcard src/cli/*.c)
CU_SRC   := $(wildcard src/backend/cuda/*.cu)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell which $(NVCC) 2>/dev/null))
NVFLAGS  ?= -O3 -std=c++17 -Isrc -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter \
            -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 \
            --expt-relaxed-constexpr -lineinfo

ifeq ($(CUDA),1)
CFLAGS   += -DPAGODA_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS   += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
O        := $(O)-cuda
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(O)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(O)/%.o)
CU_OBJ   := $(CU_SRC:%.cu=$(O)/%.cu.o)
ifeq ($(CUDA),1)
LIB_OBJ  += $(CU_OBJ)
endif

TEST_SRC := $(wildcard tests/c/test_*.c)
TEST_BIN := $(TEST_SRC:tests/c/%.c=$(O)/tests/%)

.PHONY: all test test-c test-py test-san fuzz cuda-objs clean bench-cpu test-cuda test-cuda-bins bench-cuda
all: $(O)/pagoda
ifneq ($(O),build)
	@mkdir -p build && ln -sf ../$(O)/pagoda build/pagoda-$(notdir $(O))
endif

$(O)/libpagoda.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(O)/pagoda: $(CLI_OBJ) $(O)/libpagoda.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(O)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c -o $@ $<

$(O)/tests/%: tests/c/%.c $(O)/libpagoda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/libpagoda.a $(LDLIBS) -lcmocka

cuda-objs: $(CU_SRC:%.cu=build-cuda/%.cu.o)
build-cuda/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c -o $@ $<

test-bins: $(TEST_BIN) $(O)/pagoda

# GPU tests (tests/cuda/test_*.c, cmocka): `make CUDA=1 test-cuda` builds and runs them on the GPU.
CUDA_TEST_BIN := $(patsubst tests/cuda/%.c,$(O)/tests-cuda/%,$(wildcard tests/cuda/test_*.c))
$(O)/tests-cuda/%: tests/cuda/%.c tests/cuda/cuda_test_util.h $(O)/libpagoda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/libpagoda.a $(LDLIBS) -lcmocka
# GPU microbenchmarks (tests/cuda/bench_*.c): built with the GPU tests, never run by test-cuda.
CUDA_BENCH_BIN := $(patsubst tests/cuda/%.c,$(O)/tests-cuda/%,$(wildcard tests/cuda/bench_*.c))
test-cuda-bins: $(CUDA_TEST_BIN) $(CUDA_BENCH_BIN) $(O)/pagoda
test-cuda: test-cuda-bins
	@bash tests/cuda/run.sh $(O)

# Decode-path kernel microbenchmark (GPU): `make CUDA=1 bench-cuda` builds $(O)/bench/cuda_ops_bench.
bench-cuda: $(O)/bench/cuda_ops_bench
$(O)/bench/cuda_ops_bench: bench/cuda_ops_bench.c $(O)/libpagoda.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(O)/libpagoda.a $(LDLIBS) -lcupti

# The whole suite: C unit tests, then the sanitizer build of the same tests, then Python tests.
test: all
	@bash tests/run_all.sh

test-c: $(TEST_BIN) $(O)/pagoda
	@bash tests/run_c.sh $(O)

FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build-fuzz/%)
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
               -I/usr/include/x86_64-linux-gnu/openblas-pthread $(ARCH_FLAGS) -fsanitize=fuzzer-no-link,address,undefined
FUZZ_OBJ := $(LIB_SRC:%.c=build-fuzz/%.o)
fuzz: $(FUZZ_BIN)
build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<
build-fuzz/libpagoda.a: $(FUZZ_OBJ)
	ar rcs $@ $^
build-fuzz/fuzz_%: fuzz/fuzz_%.c build-fuzz/libpagoda.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libpagoda.a $(LDLIBS)

clean:
	rm -rf build build-san build-cuda build-san-cuda build-fuzz

# .cu objects too (nvcc -MMD writes foo.cu.d): a header change must rebuild every kernel file
# that includes it, or objects with stale struct layouts link together
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(wildcard build-cuda/src/backend/cuda/*.cu.d) $(wildcard build-fuzz/src/*/*.d build-fuzz/src/*/*/*.d)
