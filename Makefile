# One command sets everything up and runs the main job; one sets everything up
# and runs the whole test suite. Both create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test test-fast notebooks benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,notebooks]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job: grade the reference model, then train it on SIGNS with the quick recipe
# (a few minutes on a laptop CPU; the data is downloaded on first use, or read from
# $$RESNET_COURSE_DATA).
quickstart: setup
	$(BIN)/resnet-course check
	$(BIN)/resnet-course train --dataset signs --profile quick --out runs/signs-quick

# The whole test suite: the package's tests and the solution notebooks under nbval
# (RESNET_COURSE_PROFILE=ci makes the training notebooks run on a small subset).
test: setup
	RESNET_COURSE_PROFILE=ci $(BIN)/python -m pytest --nbval-lax tests solutions

# The fast part, for a developer's edit-test loop (a few minutes): every test not marked slow
# (slow: training runs, notebook runs, nbgrader round trips, sandboxed grading).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" tests

# Regenerate the student release, notebooks/, from the sources in solutions/.
notebooks: setup
	$(BIN)/python scripts/release_notebooks.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
