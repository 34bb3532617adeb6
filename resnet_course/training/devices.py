"""Training on several devices (GPUs, or CPU devices) with Keras 3's own distribution support.

``plan_devices(devices, batch_size=...)`` finds the devices the Keras backend sees and
returns a ``DevicePlan``; build, compile and fit the model inside ``plan.scope()``:

    plan = plan_devices("all", batch_size=64)   # first: before any model, optimizer or dataset
    keras.utils.set_random_seed(seed)
    with plan.scope():
        model = plan.prepare_model(build_model(...))
        model.compile(..., jit_compile=...)     # jax: True (False runs every step eagerly)
        model.fit(...)   # batches a multiple of plan.batch_multiple (make_datasets(batch_multiple=...))
        with unsynchronized_batch_norm(model):  # a file that loads on every backend
            model.save(path)
    model.predict(...)                          # outside the scope: every batch size works

What runs on each backend:

``jax``
    ``keras.distribution.DataParallel``: the variables are replicated on every
    device, each batch is split along its first axis, and the step is one SPMD
    program on the global batch, so batch norm already takes its statistics over
    the whole batch. Every batch (training, validation, and prediction inside the
    scope) must divide evenly among the devices, the last one included.
``tensorflow``
    ``tf.distribute.MirroredStrategy``, which Keras 3's TensorFlow trainer runs:
    each replica takes an equal share of the batch and the gradients are summed
    across replicas. Batch norm would take per-replica statistics; ``prepare_model``
    sets ``synchronized=True`` on every ``BatchNormalization`` so they are the
    global batch's, as on one device.
``torch`` (and numpy, openvino)
    one device only: Keras 3 has no distribution support for these backends
    (``keras.src.backend`` sets ``distribution_lib = None`` for them).

Several devices on a CPU-only machine, for tests: ``configure_virtual_cpus(n)`` before
the backend starts, or ``virtual_cpu_devices_env(n)`` for a subprocess running JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator

import keras

#: Backends on which Keras 3 trains one model on several devices.
MULTI_DEVICE_BACKENDS = ("jax", "tensorflow")
KNOWN_BACKENDS = ("jax", "tensorflow", "torch", "numpy", "openvino")
SINGLE_DEVICE = "single device"
JAX_STRATEGY = "keras.distribution.DataParallel"
TF_STRATEGY = "tf.distribute.MirroredStrategy"
XLA_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


# --- parsing ----------------------------------------------------------------------


def parse_devices(value) -> str | int:
    """``"all"`` or a positive int, from ``"all"``, ``"2"`` or ``2`` (the ``--devices`` option)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return "all"
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"--devices takes 'all' or a positive number, got {value!r}.")


# --- the plan ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """Which devices one training run uses, and how Keras spreads the model over them.

    ``names`` are Keras' device names (``"gpu:0"``, ``"cpu:1"``; ``"cuda:0"`` on torch);
    ``available`` is how many devices of that kind the backend sees.
    """

    backend: str
    count: int
    names: tuple[str, ...]
    kind: str
    strategy_name: str
    available: int = 1
    # The keras.distribution.DataParallel (jax) or tf.distribute.MirroredStrategy (tensorflow)
    # behind scope(); None on one device.
    _strategy: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def distributed(self) -> bool:
        return self.count > 1

    @property
    def batch_multiple(self) -> int:
        """Every batch's size must be a multiple of this: the device count on jax, else 1.

        TensorFlow's MirroredStrategy splits an uneven last batch itself; JAX's
        DataParallel cannot shard a batch that does not divide evenly."""
        return self.count if self.distributed and self.backend == "jax" else 1

    def scope(self) -> contextlib.AbstractContextManager:
        """The context in which to build, compile and fit the model (and predict, on jax)."""
        if not self.distributed:
            return contextlib.nullcontext()
        return self._strategy.scope()

    def check_batch_size(self, batch_size: int) -> None:
        """Fail clearly unless the global batch splits evenly among the devices."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive int, got {batch_size!r}.")
        if batch_size % self.count:
            lower = batch_size - batch_size % self.count
            suggestions = " or ".join(str(n) for n in (lower, lower + self.count) if n > 0)
            raise ValueError(
                f"The batch size {batch_size} does not divide among {self.count} devices: each device "
                f"takes an equal share of every batch. Use a batch size that is a multiple of "
                f"{self.count} (e.g. {suggestions}), or fewer devices."
            )

    def prepare_model(self, model: keras.Model) -> keras.Model:
        """``model``, ready to train on this plan's devices (the same object, changed in place).

        Call it inside ``scope()``, on the model built there, before ``compile``. On
        tensorflow with several devices it synchronizes every batch norm across the
        replicas (``synchronized=True``), so the statistics are the global batch's as on
        one device; a fused batch norm (``resnet_course.fused_batchnorm``) then takes
        Keras' unfused path. Elsewhere it only checks the model was built in the scope.
        """
        if not self.distributed:
            return model
        if self.backend == "tensorflow":
            if getattr(model, "_distribute_strategy", None) is not self._strategy:
                raise ValueError(
                    "prepare_model: the model was built outside plan.scope(); on tensorflow a model "
                    "trains on several devices only when it is created inside the strategy's scope. "
                    "Build it inside `with plan.scope():`."
                )
            for layer in batch_norm_layers(model):
                layer.synchronized = True
        elif self.backend == "jax":
            local = [v.path for v in model.weights if not _is_on_mesh(v)]
            if local:
                raise ValueError(
                    f"prepare_model: {len(local)} of the model's weights (e.g. {local[0]!r}) live on one "
                    "device: the model was built outside plan.scope(). Build it inside "
                    "`with plan.scope():`."
                )
        return model

    def to_dict(self) -> dict:
        """For metrics.json."""
        return dict(backend=self.backend, count=self.count, names=list(self.names), kind=self.kind,
                    strategy=self.strategy_name, available=self.available)


def plan_devices(devices="1", backend: str | None = None, batch_size: int | None = None) -> DevicePlan:
    """The devices to train on: ``devices`` is ``"all"``, or how many (``"2"``, ``2``).

    Accelerators (GPUs) are preferred when the backend sees any, else CPU devices.
    ``backend`` defaults to Keras' (``keras.backend.backend()``); ``batch_size``, the
    global batch, is checked to divide among the devices. On tensorflow call this
    before building any model (the strategy is created here); on tensorflow and jax,
    create virtual CPU devices (``configure_virtual_cpus``) before it, if you want them.
    """
    requested = parse_devices(devices)
    backend = backend or keras.backend.backend()
    if backend not in KNOWN_BACKENDS:
        raise ValueError(f"Unknown Keras backend {backend!r}; expected one of {', '.join(KNOWN_BACKENDS)}.")
    if backend not in MULTI_DEVICE_BACKENDS and requested != "all" and requested > 1:
        raise ValueError(
            f"Keras 3 trains on one device only with the {backend} backend (it has no distribution "
            f"support there), so --devices {requested} cannot run. Use --devices 1, or the "
            f"{' or '.join(MULTI_DEVICE_BACKENDS)} backend (KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow)."
        )
    if backend != keras.backend.backend():
        raise ValueError(
            f"Keras runs the {keras.backend.backend()} backend, so it cannot train on {backend} devices. "
            f"Set KERAS_BACKEND={backend} before importing keras, or leave backend unset."
        )

    kind, names, native = _discover(backend)
    available = _torch_gpu_count() if backend == "torch" and kind == "gpu" else len(names)
    count = len(names) if requested == "all" else requested
    if backend not in MULTI_DEVICE_BACKENDS:
        count = 1  # "all" on a single-device backend
    if count > len(names):
        raise ValueError(
            f"Asked for {count} devices, but the {backend} backend sees {len(names)} "
            f"{kind.upper()} device{'s' if len(names) != 1 else ''} ({', '.join(names)}). Use --devices "
            f"{len(names)} or 'all'. To try several devices on a CPU, create virtual CPU devices before "
            f"the backend starts: resnet_course.training.devices.configure_virtual_cpus({count}) (jax, "
            f"tensorflow), or for jax the environment variable XLA_FLAGS={XLA_DEVICE_COUNT_FLAG}={count}."
        )
    names, native = tuple(names[:count]), native[:count]
    strategy, strategy_name = None, SINGLE_DEVICE
    if count > 1 and backend == "jax":
        strategy, strategy_name = keras.distribution.DataParallel(devices=list(names)), JAX_STRATEGY
    elif count > 1 and backend == "tensorflow":
        strategy, strategy_name = _mirrored_strategy(tuple(native)), TF_STRATEGY
    plan = DevicePlan(backend=backend, count=count, names=names, kind=kind, strategy_name=strategy_name,
                      available=available, _strategy=strategy)
    if batch_size is not None:
        plan.check_batch_size(batch_size)
    return plan


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per set of devices, for the whole process.

    A second MirroredStrategy on the same devices reuses the first one's collective
    keys, and its all-reduces then fail ("Shape mismatch in the collective instance"):
    a notebook training twice must get the same strategy back."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(devices))


def _discover(backend: str) -> tuple[str, list[str], list[str]]:
    """(kind, Keras' device names, the backend's own names) of the accelerators, else the CPUs."""
    if backend == "jax":
        import jax

        for kind in ("gpu", "tpu"):
            try:
                found = jax.devices(kind)
            except RuntimeError:  # jax raises when it has no backend of that kind
                found = []
            if found:
                break
        else:
            kind, found = "cpu", jax.devices("cpu")
        names = [f"{d.platform}:{d.id}" for d in found]  # as keras.distribution.list_devices names them
        return kind, names, names
    if backend == "tensorflow":
        import tensorflow as tf

        for kind in ("GPU", "CPU"):
            found = tf.config.list_logical_devices(kind)
            if found:
                return kind.lower(), [f"{kind.lower()}:{d.name.split(':')[-1]}" for d in found], \
                    [d.name for d in found]
        raise RuntimeError("TensorFlow lists no CPU or GPU device.")
    if backend == "torch":
        import torch

        name = "cuda:0" if torch.cuda.is_available() else "cpu"
        return ("gpu" if name.startswith("cuda") else "cpu"), [name], [name]
    return "cpu", ["cpu"], ["cpu"]


def _torch_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _is_on_mesh(variable) -> bool:
    sharding = getattr(getattr(variable, "value", None), "sharding", None)
    return sharding is not None and len(getattr(sharding, "device_set", ())) > 1


# --- batch norm -------------------------------------------------------------------


def batch_norm_layers(model) -> Iterator[keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` of ``model``, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif hasattr(layer, "layers"):
            yield from batch_norm_layers(layer)


@contextlib.contextmanager
def unsynchronized_batch_norm(model):
    """Inside: ``model``'s batch norms with ``synchronized=False``; on exit, as before.

    Wrap ``model.save`` in it after ``prepare_model`` on tensorflow: a saved
    ``synchronized=True`` loads only on tensorflow (Keras refuses it elsewhere)."""
    layers = [layer for layer in batch_norm_layers(model) if layer.synchronized]
    for layer in layers:
        layer.synchronized = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.synchronized = True


# --- virtual CPU devices, for tests --------------------------------------------------


def virtual_cpu_devices_env(n: int, environ=None) -> dict:
    """Environment variables that give JAX ``n`` CPU devices, for a subprocess (``{**os.environ, **env}``).

    JAX reads them when it starts its backend, so they must be set before that
    process imports jax. (TensorFlow has no such variable: use ``configure_virtual_cpus``
    inside the process.)"""
    n = _positive_count(n)
    flags = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if not f.startswith(XLA_DEVICE_COUNT_FLAG + "="))
    return {"XLA_FLAGS": f"{flags} {XLA_DEVICE_COUNT_FLAG}={n}".strip()}


def configure_virtual_cpus(n: int, backend: str | None = None) -> None:
    """Split the CPU into ``n`` devices for the current backend (jax, tensorflow).

    Call it before the backend starts: before any array, model or device query.
    Fails clearly when it is too late, or on a backend without multi-device training."""
    n = _positive_count(n)
    backend = backend or keras.backend.backend()
    too_late = (f"configure_virtual_cpus({n}) comes too late: the {backend} backend has already started "
                f"with its devices. Call it first thing after importing keras, before building any model "
                f"or listing devices")
    if backend == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", n)
        except RuntimeError as error:
            if len(jax.devices("cpu")) == n:
                return
            raise RuntimeError(
                f"{too_late}; or start Python with XLA_FLAGS={XLA_DEVICE_COUNT_FLAG}={n}."
            ) from error
    elif backend == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError as error:
            if len(tf.config.list_logical_devices("CPU")) == n:
                return
            raise RuntimeError(f"{too_late}.") from error
    else:
        raise ValueError(
            f"configure_virtual_cpus: Keras 3 trains on one device only with the {backend} backend; "
            f"virtual CPU devices serve {' and '.join(MULTI_DEVICE_BACKENDS)} only."
        )


def _positive_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of virtual CPU devices must be a positive int, got {n!r}.")
    return n
