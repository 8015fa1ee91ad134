# liblsqr, the C API (crates/lsqr-capi): build, regenerate the header,
# install, and check an installed copy through pkg-config.
#
#   make lib                        target/release/liblsqr.{so,a}
#   make header                     include/lsqr.h (cbindgen)
#   make install PREFIX=/usr/local  include/lsqr.h, lib/liblsqr.{so,a},
#                                   lib/pkgconfig/lsqr.pc (DESTDIR honoured)
#   make pkgconfig-check            install into a temporary prefix and build
#                                   and run an example through pkg-config,
#                                   linked both dynamically and statically
#   make ffi-examples               make -C ffi-examples run valgrind

CARGO      ?= cargo
CC         ?= cc
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR    ?=
RELEASE    := target/release
# The workspace version (the first `version = ` of Cargo.toml).
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

.PHONY: lib header install pkgconfig-check ffi-examples

lib:
	$(CARGO) build --release -p lsqr-capi

header:
	$(CARGO) run -q -p lsqr-capi --example gen_header

# The system libraries the staticlib needs, as rustc reports them for this
# target (Libs.private of lsqr.pc, used by `pkg-config --static`).
$(RELEASE)/native-static-libs.txt: lib
	$(CARGO) rustc -q --release -p lsqr-capi --crate-type staticlib -- --print native-static-libs 2>&1 \
	  | sed -n 's/.*native-static-libs: //p' | tail -n 1 > $@.tmp
	test -s $@.tmp && mv $@.tmp $@

install: lib $(RELEASE)/native-static-libs.txt
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/lsqr.h $(DESTDIR)$(INCLUDEDIR)/lsqr.h
	install -m 755 $(RELEASE)/liblsqr.so $(DESTDIR)$(LIBDIR)/liblsqr.so
	install -m 644 $(RELEASE)/liblsqr.a $(DESTDIR)$(LIBDIR)/liblsqr.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e "s|@LIBS_PRIVATE@|$$(cat $(RELEASE)/native-static-libs.txt)|" \
	    crates/lsqr-capi/lsqr.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/lsqr.pc

pkgconfig-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory install PREFIX="$$tmp"; \
	export PKG_CONFIG_PATH="$$tmp/lib/pkgconfig"; \
	test "$$(pkg-config --modversion lsqr)" = "$(VERSION)"; \
	libdir=$$(pkg-config --variable=libdir lsqr); \
	$(MAKE) --no-print-directory -C ffi-examples model > /dev/null; \
	echo "pkg-config --cflags --libs lsqr: $$(pkg-config --cflags --libs lsqr)"; \
	$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -o "$$tmp/stats_shared" \
	  ffi-examples/c/dequantize_stats.c $$(pkg-config --cflags --libs lsqr) -Wl,-rpath,"$$libdir" -lm; \
	"$$tmp/stats_shared" target/ffi/example.lsq > /dev/null; \
	ldd "$$tmp/stats_shared" | grep -q "$$libdir/liblsqr.so"; \
	echo "pkg-config --static --libs lsqr: $$(pkg-config --static --libs lsqr)"; \
	$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -o "$$tmp/stats_static" \
	  ffi-examples/c/dequantize_stats.c $$(pkg-config --cflags lsqr) \
	  $$(pkg-config --static --libs lsqr | sed 's/-llsqr\b/-l:liblsqr.a/') -lm; \
	"$$tmp/stats_static" target/ffi/example.lsq > /dev/null; \
	if ldd "$$tmp/stats_static" | grep -q liblsqr; then echo "the static build loads liblsqr.so"; exit 1; fi; \
	echo "pkgconfig-check: the installed liblsqr builds and runs the example, shared and static"

ffi-examples:
	$(MAKE) -C ffi-examples run valgrind
