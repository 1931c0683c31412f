# Two entry points for a fresh machine: `make run` and `make test`.
# Both set everything up from nothing and are safe to run again.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lenszoo-installed
PLUGIN_PROJECTS := $(wildcard plugins/*/pyproject.toml)

.PHONY: run test setup system-deps clean

run: setup
	$(VENV)/bin/lenszoo demo --figure out/demo.png

test: setup
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN_PROJECTS) | system-deps
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]" $(foreach p,$(PLUGIN_PROJECTS),-e $(dir $(p)))
	@touch $@

# escnn's dependency py3nj builds from source and needs a Fortran compiler.
system-deps:
	@command -v gfortran >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gfortran (needed to build escnn's py3nj)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gfortran >/dev/null); \
	  else \
	    echo "error: gfortran is missing; install it (e.g. 'sudo apt-get install gfortran') and re-run" >&2; exit 1; \
	  fi; }

clean:
	rm -rf $(VENV) build *.egg-info
