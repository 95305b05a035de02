# MechWatch: `make demo` and `make test` work on a fresh Debian machine with Swift installed.
SWIFT ?= swift
BIN := .build/debug/mechwatch

.PHONY: install build test kill-test flood-test detection fuzz demo bench fixtures clean

install:
	@scripts/install-deps.sh

build: install
	$(SWIFT) build

test: install
	@scripts/install-deps.sh --test
	$(SWIFT) build
	$(SWIFT) test
	@python3 -c "import numpy, pytest, scipy, sklearn, pandas, matplotlib" 2>/dev/null || python3 -m pip install --quiet numpy pytest scipy scikit-learn pandas matplotlib
	python3 scripts/kill_test.py $(BIN)
	python3 scripts/flood_test.py $(BIN)
	python3 scripts/sequence_fuzz.py $(BIN) --seconds 60
	MECHWATCH_BIN=$(BIN) PYTHONPATH=clients/python python3 -m pytest -q clients/python/tests --ignore=clients/python/tests/test_recorder.py
	MECHWATCH_BIN=$(BIN) MECHWATCH_REQUIRE_TORCH=1 PYTHONPATH=clients/python /usr/bin/python3 -m pytest -q -rs clients/python/tests/test_recorder.py

# 8 clients flooding 12x768 traces; the daemon's peak RSS must stay bounded (also run by `test`).
flood-test: build
	@python3 -c "import numpy" 2>/dev/null || python3 -m pip install --quiet numpy
	python3 scripts/flood_test.py $(BIN)

# SIGKILL mid-stream, restart, check every acknowledged event and fit trace is stored (also run by `test`).
kill-test: build
	@python3 -c "import numpy" 2>/dev/null || python3 -m pip install --quiet numpy
	python3 scripts/kill_test.py $(BIN)

# Seeded state-machine fuzz: pipelined sequences on several connections, SIGKILL + restart, store checks
# (a 60 s run is part of `test`). FUZZ_SECONDS=1800 SEED=7 for another run.
fuzz: build
	python3 scripts/sequence_fuzz.py $(BIN) --seconds $(or $(FUZZ_SECONDS),600) --seed $(or $(SEED),1)

# Detection on the eight evaluation sets against kNN, Mahalanobis, class-conditional Mahalanobis and ECOD
# (also run by `test`, through pytest). SEED=8 draws other digits sets.
detection: build
	@python3 -c "import numpy, scipy, sklearn" 2>/dev/null || python3 -m pip install --quiet numpy scipy scikit-learn
	python3 scripts/detection_eval.py $(BIN) --seed $(or $(SEED),7) --check

demo: build
	@python3 -c "import numpy, pandas, matplotlib" 2>/dev/null || python3 -m pip install --quiet numpy pandas matplotlib
	@scripts/demo.sh $(BIN)

# Throughput benchmark (release build): the daemon end to end and in-process, then numpy doing the same
# math in-process on the same reference and probes; prints the ratios. Figures and files land in .bench/.
bench: install
	$(SWIFT) build -c release
	@python3 -c "import numpy" 2>/dev/null || python3 -m pip install --quiet numpy
	.build/release/mechwatch bench --keep .bench $(BENCH_ARGS)
	python3 bench/numpy_baseline.py .bench

# Regenerates the committed numpy/scipy/scikit-learn fixtures of the math tests.
fixtures:
	python3 -m pip install --quiet numpy scipy scikit-learn
	python3 Tests/MechWatchCoreTests/Fixtures/make_fixtures.py

clean:
	rm -rf .build .demo .bench mechwatch.db mechwatch.db-wal mechwatch.db-shm mechwatch.db.lock
