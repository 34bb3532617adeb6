# One command sets everything up and runs the main job; one sets everything up
# and runs the whole test suite. Both create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test test-tensorflow test-backends test-fast notebooks benchmark clean

# All three Keras backends go into .venv/ (the tests run on each). PyTorch is pinned first: a
# plain `torch` would pull a CUDA build of several GB; on a CPU-only machine, add
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for PyTorch's own CPU wheels.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# The tests that run again on JAX and on PyTorch (the whole suite runs on TensorFlow): the model,
# the grader's accepted styles and mistakes, the exercises' checks, training (one CI-profile
# epoch, save, load, evaluate, predict; a time budget's measured plan), the input pipelines, backends, multi-device training,
# the fused batch norm (PyTorch's kernel; Keras' own layer on JAX) and PyTorch's channels-last
# convolution and pooling (resnet_course.torch_kernels).
BACKEND_TESTS := tests/test_model.py tests/test_grading.py tests/test_exercises.py \
	tests/test_training.py tests/test_budget.py tests/test_backends.py tests/test_devices.py tests/test_fused_batchnorm.py \
	tests/test_torch_kernels.py \
	tests/test_datasets.py::test_make_datasets_batches_scales_and_splits \
	tests/test_datasets.py::test_augmentation_is_reproducible_and_changes_every_epoch \
	tests/test_datasets.py::test_batches_cut_to_a_multiple_of_the_devices

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[tensorflow,torch,jax,test,notebooks]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job: grade the reference model, then train it on SIGNS with the quick recipe
# (a few minutes on a laptop CPU; the data is downloaded on first use, or read from
# $$RESNET_COURSE_DATA).
quickstart: setup
	$(BIN)/resnet-course check
	$(BIN)/resnet-course train --dataset signs --profile quick --out runs/signs-quick

# The whole test suite: the package's tests and the solution notebooks under nbval on TensorFlow
# (RESNET_COURSE_PROFILE=ci makes the training notebooks run on a small subset), then
# BACKEND_TESTS on JAX and on PyTorch.
test: test-tensorflow test-backends

test-tensorflow: setup
	KERAS_BACKEND=tensorflow RESNET_COURSE_PROFILE=ci $(BIN)/python -m pytest --nbval-lax tests solutions

test-backends: setup
	KERAS_BACKEND=jax RESNET_COURSE_PROFILE=ci $(BIN)/python -m pytest $(BACKEND_TESTS)
	KERAS_BACKEND=torch RESNET_COURSE_PROFILE=ci $(BIN)/python -m pytest $(BACKEND_TESTS)

# The fast part, for a developer's edit-test loop (a few minutes): every test not marked slow
# (slow: training runs, notebook runs, nbgrader round trips, sandboxed grading).
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" tests

# Regenerate the student release, notebooks/, from the sources in solutions/.
notebooks: setup
	$(BIN)/python scripts/release_notebooks.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
