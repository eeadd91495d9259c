# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages of the real protocol peers the tests drive (uuid-runtime: `uuidgen`, which the
# seed documents' curl examples and the generated SKILL.md call).
TEST_DEBS := swaks libnet-ssleay-perl isync uuid-runtime systemd python3-venv python3-seccomp
# Debian packages of the anchors `make bench` compares against (private instances under /tmp).
BENCH_DEBS := postfix dovecot-imapd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test debs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: $(VENV)/.run-deps
	$(BIN)/openmailserver serve --dev

debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(VENV)/.test-deps debs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache

# Benchmarks against Postfix and Dovecot, and the reliability tests at a bigger size; not part of `make test`.
# BENCH_ARGS e.g. "--reps 5 --profile", "--only imap", "--quick --reps 1".
.PHONY: bench
bench: | $(BIN)/python
	@$(BIN)/python -c 'import httpx, matplotlib, openmailserver, pytest, hypothesis' 2>/dev/null && [ -x $(BIN)/py-spy ] || \
	  $(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m bench.run --debs "$(BENCH_DEBS)" $(BENCH_ARGS)
