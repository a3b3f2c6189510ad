# afp_tf developer commands. `make run` and `make test` work on a fresh machine:
# each creates .venv (Python >= 3.10) with afp_tf[dev] installed (every extra, the test
# tools), then does its job.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= lenet5_fashion_mnist
WORKDIR ?= runs/$(CONFIG)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data run test test-fast lint format wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Offline Fashion-MNIST (IDX files) from Debian's package; TFDS users can skip this.
data: $(FASHION_MNIST)

$(FASHION_MNIST):
	@command -v apt-get >/dev/null || { echo "Install Fashion-MNIST IDX files into $(dir $(FASHION_MNIST)) (Debian package dataset-fashion-mnist)"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist

run: setup data
	$(VENV)/bin/afp-tf --config $(CONFIG) --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest -n 2 --dist loadfile --timeout 900 -q -p no:cacheprovider --durations=15

test-fast: setup
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check afp_tf tests export benchmarks configs
	$(VENV)/bin/ruff format --check afp_tf tests export benchmarks configs

format: setup
	$(VENV)/bin/ruff check --fix afp_tf tests export benchmarks configs
	$(VENV)/bin/ruff format afp_tf tests export benchmarks configs

# The installable wheel (configs/ and export/ inside it as afp_tf.configs, afp_tf.deploy).
wheel: setup
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) runs .pytest_cache build dist
