# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - create .venv, install, run the main job on the embedded default
#                 (estimate a model, pretrain the baseline, a short search on digits)
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPACE  ?= search_spaces/mobilenetv2_32.yaml
RUN    ?= runs/demo

.PHONY: install demo test lint clean pg

# torch==2.13.0 first: the CPU build on this machine's disk (a looser requirement can pull
# a multi-GB CUDA build); the project's own range admits it, so pip adds nothing later.
$(BIN)/nasctl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/nasctl

demo: install
	$(BIN)/nasctl space $(SPACE) --sample 3
	$(BIN)/nasctl export --space $(SPACE) --seed 0 --out $(RUN)/model.onnx
	$(BIN)/nasctl estimate $(RUN)/model.onnx --measure --top 5
	$(BIN)/nasctl pretrain --space $(SPACE) --baseline --time-budget 60 --out $(RUN)/pretrain
	$(BIN)/nasctl search $(SPACE) --trials 6 --trial-seconds 20 --out $(RUN)/search
	@echo "demo done: see $(RUN)/search/report.md"

# The distributed-search test starts a throwaway PostgreSQL server: install Debian's
# package when it is missing and we are root (otherwise that one test skips, saying why).
pg:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1; } || \
	  echo "PostgreSQL is not installed: the distributed-search test will skip"

test: install pg
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check nasctl tests

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
