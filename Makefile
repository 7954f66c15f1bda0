# Datapunk Mesh: one Makefile, out-of-tree into $(BUILD). `make V=1` shows full commands.
#
# Layout it relies on (add files, not rules):
#   bpf/*.bpf.c            -> $(BUILD)/bpf/*.bpf.o + $(BUILD)/*.skel.h
#   user/<module>/*.c      -> $(BUILD)/libmesh.a   (every module except meshd/ and meshctl/;
#   user/<module>/*/*.c       one level of sub-folders too, e.g. user/discovery/consul/)
#   user/meshd/*.c         -> $(BUILD)/meshd
#   user/meshctl/*.c       -> $(BUILD)/meshctl
#   tests/unit/test_*.c    -> $(BUILD)/tests/unit/test_*   (each linked with tests/unit/test_main.c)
#   tests/tools/*.c        -> $(BUILD)/tests/tools/*        (helpers the e2e suites run)
#   tests/fuzz/fuzz_*.c    -> $(BUILD)/fuzz/fuzz_*          (libFuzzer, clang)
#   bench/*.c              -> $(BUILD)/bench/*

.DELETE_ON_ERROR:
.SUFFIXES:
.SECONDARY:
.DEFAULT_GOAL := all

BUILD    ?= build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
PREFIX   ?= /usr/local
SAN      ?=
FUZZ_TIME ?= 10
QUICK    ?= 0

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

PKGS      := libbpf libelf zlib openssl libcjson libcurl libnghttp2 libcares
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -MMD -MP -D_GNU_SOURCE -DMESH_VERSION='"$(VERSION)"' \
	    -Iinclude -Iuser -Ibpf -I$(BUILD) $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm
ifneq ($(SAN),)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -Wall -Werror -D__TARGET_ARCH_$(ARCH) \
	      -Iinclude -Ibpf -I$(BUILD)

BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_OBJS   := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
SKELS      := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))

LIB_SRCS   := $(filter-out user/meshd/% user/meshctl/%,$(wildcard user/*/*.c user/*/*/*.c))
LIB_OBJS   := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS))
MESHD_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard user/meshd/*.c))
CTL_OBJS   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard user/meshctl/*.c))
UNIT_SRCS  := $(filter-out tests/unit/test_main.c,$(wildcard tests/unit/test_*.c)) # test_main: the harness
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
TOOL_BINS  := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))

.PHONY: all test test-run unit e2e demo bench install uninstall asan fuzz fmt fmt-check docs \
	docs-check deps bpffs clean

all: $(BUILD)/meshd $(BUILD)/meshctl

# --- BPF ---------------------------------------------------------------------------------------
$(BUILD)/vmlinux.h:
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/vmlinux.h
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

# --- userspace ---------------------------------------------------------------------------------
$(BUILD)/%.o: %.c | $(SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libmesh.a: $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/meshd: $(MESHD_OBJS) $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/meshctl: $(CTL_OBJS) $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/test_main.o $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# Unit tests of meshd internals also link the object they test (meshd/ is not in libmesh.a).
$(BUILD)/tests/unit/test_lifecycle: $(BUILD)/tests/unit/test_lifecycle.o \
		$(BUILD)/user/meshd/lifecycle.o $(BUILD)/tests/unit/test_main.o $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# --- tests -------------------------------------------------------------------------------------
# `make test` is what CI and the README run: dependencies, bpffs, build, every suite.
test: deps bpffs
	$(Q)$(MAKE) --no-print-directory all unit-bins
	$(Q)MESH_BUILD=$(BUILD) tests/run.sh

# meshd with its test-only fault injection points live (user/meshd/faults.c, MESHD_FAULTS): the
# reload suites break each component in turn. Never installed.
$(BUILD)/user/meshd/faults_test.o: user/meshd/faults.c | $(SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -DMESHD_FAULTS -c $< -o $@

$(BUILD)/tests/meshd_faults: $(filter-out $(BUILD)/user/meshd/faults.o,$(MESHD_OBJS)) \
		$(BUILD)/user/meshd/faults_test.o $(BUILD)/libmesh.a
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

.PHONY: unit-bins
unit-bins: $(UNIT_BINS) $(TOOL_BINS) $(BENCH_BINS) $(BUILD)/tests/meshd_faults

unit: unit-bins
	$(Q)MESH_BUILD=$(BUILD) tests/run.sh unit

e2e: all unit-bins
	$(Q)MESH_BUILD=$(BUILD) tests/run.sh e2e

# Same suites under ASan+UBSan, in their own build tree.
asan: deps bpffs
	$(Q)$(MAKE) --no-print-directory BUILD=build/asan SAN=1 all unit-bins
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		MESH_BUILD=build/asan tests/run.sh

deps:
	$(Q)scripts/install-deps.sh --if-missing

bpffs:
	$(Q)scripts/mount-bpffs.sh

demo: deps bpffs all
	$(Q)MESH_BUILD=$(BUILD) scripts/demo.sh

bench: deps bpffs all unit-bins
	$(Q)MESH_BUILD=$(BUILD) QUICK=$(QUICK) bench/run.sh

# --- fuzzing: libFuzzer + ASan/UBSan, library compiled with clang into its own tree ------------
FUZZ_CFLAGS := -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -Iuser -Ibpf -I$(BUILD) $(PKG_CFLAGS) \
	       -fsanitize=fuzzer-no-link,address,undefined -DMESH_VERSION='"fuzz"'
FUZZ_LIB_OBJS := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(LIB_SRCS))

$(BUILD)/fuzz/obj/%.o: %.c | $(SKELS)
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJS)
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ $(PKG_LIBS) -lm -o $@

fuzz: deps $(FUZZ_BINS)
	$(Q)set -e; for f in $(FUZZ_BINS); do \
		n=$$(basename $$f); c=tests/fuzz/corpus/$${n#fuzz_}; w=$(BUILD)/fuzz/work/$$n; \
		mkdir -p $$w; echo "fuzz $$n for $(FUZZ_TIME)s (seeds: $$c)"; \
		s=tests/fuzz/seed_$${n#fuzz_}.sh; if [ -x $$s ]; then $$s $$w; fi; \
		$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $$w $$c 2>&1 | tail -n 3; \
	done

# --- docs, format, install -------------------------------------------------------------------
docs: $(BUILD)/meshd
	$(Q)$(BUILD)/meshd config docs > docs/configuration.md
	@echo "  GEN      docs/configuration.md"

fmt:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h')

fmt-check:
	$(Q)clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

# The unit file names /usr/local; it is rewritten for $(PREFIX). The config is never overwritten.
install: all
	install -D -m 0755 $(BUILD)/meshd $(DESTDIR)$(PREFIX)/sbin/meshd
	install -D -m 0755 $(BUILD)/meshctl $(DESTDIR)$(PREFIX)/bin/meshctl
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local|$(PREFIX)|g' config/meshd.service > $(DESTDIR)/etc/systemd/system/meshd.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/meshd.service
	install -D -m 0644 docs/operations.md $(DESTDIR)$(PREFIX)/share/doc/meshd/operations.md
	@if [ ! -e $(DESTDIR)/etc/meshd/meshd.json ]; then \
		install -D -m 0640 config/meshd.json $(DESTDIR)/etc/meshd/meshd.json; fi
	@echo "installed; next: systemctl daemon-reload && systemctl enable --now meshd"

# Removes the files only. A running meshd's datapath stays attached: `systemctl disable --now
# meshd` and `meshd --cleanup` first (docs/operations.md). /etc/meshd is kept.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/meshd $(DESTDIR)$(PREFIX)/bin/meshctl \
	      $(DESTDIR)/etc/systemd/system/meshd.service \
	      $(DESTDIR)$(PREFIX)/share/doc/meshd/operations.md
	rmdir $(DESTDIR)$(PREFIX)/share/doc/meshd 2>/dev/null || true
	@echo "uninstalled; kept $(DESTDIR)/etc/meshd"

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
