# The two commands of the README: `make demo` (the main job) and `make test`
# (the whole suite). Both create the project's own virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= compile,bench,deploy,dev

.PHONY: demo test venv tools clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

# System tools (Debian packages): the `wrk` load generator the benchmark drives (bench/load.py)
# and util-linux's `taskset`, which starts the servers under test on their own vCPUs (bench/cpu_split.py);
# on x86-64, the arm64 cross compiler and its C library, and qemu user-mode emulation, with
# which `model-compile --target linux-aarch64` builds and verifies Graviton libraries; on an
# arm64 machine (Graviton), g++ and cmake, which build TL2cgen from its sdist (no arm64 wheel).
ifeq ($(shell uname -m),aarch64)
TOOL_PACKAGES := wrk util-linux gcc g++ cmake
TOOL_COMMANDS := wrk taskset g++ cmake
else
TOOL_PACKAGES := wrk util-linux gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
TOOL_COMMANDS := wrk taskset aarch64-linux-gnu-gcc qemu-aarch64-static
endif
tools:
	@missing=; for tool in $(TOOL_COMMANDS); do command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	[ -z "$$missing" ] || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(TOOL_PACKAGES); }

# The whole chain: sample models -> compile -> serve -> benchmark against stock -> table + report folder.
demo: venv tools
	$(PY) -m sample_models
	$(PY) -m bench all --quick

test: venv tools
	$(PY) -m pytest

clean:
	rm -rf $(VENV) artifacts reports
