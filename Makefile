# The two commands: `make run` and `make test`. Both work on a fresh Debian machine with
# Python 3.11 and root; they install what is missing and nothing twice.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/mediagate.toml
# `make run PORT=9000` listens on another port (empty = http.port from $(CONFIG), 8080)
PORT   ?=
# Debian packages: the run needs a CJK font for text watermarks; the tests also drive
# real peers (ffmpeg/ffprobe, curl) and a PostgreSQL server for the store.
RUN_DEBS  := fonts-noto-cjk
TEST_DEBS := $(RUN_DEBS) ffmpeg curl postgresql chromium chromium-driver nginx libnginx-mod-rtmp sip-tester baresip espeak-ng
# the venv's install compiles the native VP8 receive path (plugins/webrtc/_rtpin.c) and the
# SIP legs' filter bank (plugins/sip/_filterbank.c) and the mixer's kernel (gateway/media/_mixkernel.c),
# see setup.py
BUILD_DEBS := gcc libc6-dev python3-dev
# references the benchmarks measure against (bench_sip_media: Janus AudioBridge)
BENCH_DEBS := janus

.PHONY: run test lint bench clean debs-build debs-run debs-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py plugins/webrtc/_rtpin.c plugins/sip/_filterbank.c gateway/media/_mixkernel.c | $(BIN)/python debs-build
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

debs-build:
	@sh contrib/scripts/ensure-debs.sh $(BUILD_DEBS)

debs-run:
	@sh contrib/scripts/ensure-debs.sh $(RUN_DEBS)

debs-test:
	@sh contrib/scripts/ensure-debs.sh $(TEST_DEBS)

run: $(VENV)/.installed debs-run
	$(BIN)/mediagate serve --config $(CONFIG) $(if $(PORT),--set http.port=$(PORT))

test: $(VENV)/.installed debs-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

lint: $(VENV)/.installed
	$(BIN)/ruff check .

debs-bench:
	@sh contrib/scripts/ensure-debs.sh $(BENCH_DEBS)

bench: $(VENV)/.installed debs-test debs-bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache build plugins/webrtc/_rtpin*.so plugins/sip/_filterbank*.so gateway/media/_mixkernel*.so
