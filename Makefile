# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo loop-demo test lint install clean system-deps

# torch first, pinned: on CPU machines an unpinned torch would pull gigabytes of CUDA packages.
# A user with CUDA can pre-install their own torch in .venv; the range in pyproject accepts it.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The quickstart: write the demo data, import the default model once, train, print baseline vs tuned.
demo: $(VENV)/.installed
	$(BIN)/python -m tuneloop.demos.quickstart examples/data/brambleway
	$(BIN)/tuneloop models pull smollm2-135m-instruct
	$(BIN)/tuneloop run examples/quickstart.yaml --overwrite

# The feedback loop end to end: serve the quickstart, scripted users correct it, retrain, gate, promote
# (docs/feedback-loop.md). Trains the quickstart first when runs/quickstart holds none.
loop-demo: $(VENV)/.installed
	$(BIN)/tuneloop models pull smollm2-135m-instruct
	$(BIN)/python -m tuneloop.feedback.demo

test: $(VENV)/.installed system-deps
	$(BIN)/python -m pytest -q

# Debian packages the tests use, installed when we may: WordNet (synonym augmentation), PostgreSQL (the
# serve store and search storage; tests/postgres_server.py starts a throwaway cluster on a free port),
# chromium (tests/ui drive it with Playwright; Playwright's own browser download would need the internet)
# and jemalloc (training commands preload it for a lower peak memory: tuneloop.train.allocator).
system-deps:
	@missing=""; \
	[ -d /usr/share/wordnet ] || missing="$$missing wordnet-base"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 2>/dev/null | grep -q . || missing="$$missing libjemalloc2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null); \
	  else \
	    echo "note: missing$$missing; the tests that need them skip. Install with: sudo apt-get install$$missing"; \
	  fi; \
	fi

# ruff, and the layering: no import circles, no import from a higher layer, no private name across modules.
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q tests/test_layering.py

clean:
	rm -rf runs .pytest_cache
