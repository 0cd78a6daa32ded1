# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test lint bench clean demo screenshots

$(BIN)/scmwatch: pyproject.toml setup.py requirements-export.txt src/scmwatch/events/_flatten.c src/scmwatch/events/_evtx.c \
		src/scmwatch/events/_xml.c src/scmwatch/events/_lines.c src/scmwatch/events/_event.h \
		src/scmwatch/sigma/_text.c src/scmwatch/sigma/_stat.c src/scmwatch/sigma/_prog.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-export.txt
	$(BIN)/python -m compileall -q src >/dev/null  # as pip does for an installed package
	@touch $@

install: $(BIN)/scmwatch

run: install
	$(BIN)/scmwatch hunt examples/

# The reader and hunt tests once more with the C extensions switched off (scmwatch/native.py):
# their Python twins are what runs where no compiler was, and must stay right on their own.
PURE_TESTS := tests/test_events_readers.py tests/test_events_json_parser.py tests/test_events_corpus.py \
	tests/test_winlogbeat_mapping.py tests/test_winlogbeat_pairs.py tests/test_sigma_text.py tests/test_sigma_atoms.py \
	tests/test_hunt.py tests/test_hunt_gate.py tests/test_hunt_memory.py tests/test_sigma_warm_start.py \
	tests/test_sigma_layout_cache.py

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	SCMWATCH_PURE_PYTHON=1 $(BIN)/python -m pytest $(PURE_TESTS)

# Regenerate the bundled demo (examples/demo) and its ground truth; tests/test_simulate_demo.py
# checks both are what the simulator writes for this command.
demo: install
	rm -rf examples/demo
	$(BIN)/scmwatch simulate all --events 1500 --hosts 5 --seed 42 --gzip --out examples/demo \
		--labels tests/fixtures/simulate/demo-labels.jsonl

# The README's console screenshots (docs/img/console-*.png) from the bundled demo, in Debian's chromium.
screenshots: install
	$(BIN)/python docs/console_screenshots.py

bench: install
	$(BIN)/python bench/read_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
