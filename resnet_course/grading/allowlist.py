"""Loading a model config that a student's process wrote, without running anything the student wrote.

Every object a config names is checked against an allowlist of Keras' own built-in layers, operations,
initializers, regularizers and constraints BEFORE anything is deserialised, so no module named in a
config is ever imported; then the model is deserialised with ``safe_mode=True`` (no Python lambdas).
A Lambda with a Python function or a custom layer can't be loaded safely: it gets a message naming it.
"""

from __future__ import annotations

import json

import keras

#: Keras layers a student may use in these exercises (by class name, from ``keras.layers``); layers that
#: read files or wrap arbitrary callables (TFSMLayer, TorchModuleWrapper, JaxLayer ...) are not among them.
SAFE_LAYERS = frozenset({
    "InputLayer", "Conv2D", "Conv1D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
    "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "ZeroPadding2D", "Cropping2D",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "Flatten", "Reshape", "Permute", "Dense", "Dropout", "SpatialDropout2D", "Identity", "Rescaling",
    "Lambda",  # only with a function of keras.activations or keras.ops, checked below
})
#: modules whose operation classes (what ``keras.ops.relu(X)`` or ``X + Y`` leave in a functional
#: model) and functions (``Lambda(keras.activations.relu)``) are allowed
OPERATION_MODULES = frozenset({
    "keras.src.ops.nn", "keras.src.ops.numpy", "keras.src.ops.math",
    "keras.src.activations.activations",
})
FUNCTION_MODULES = OPERATION_MODULES | {"keras.activations", "keras.ops", "keras.src.activations"}
#: namespaces of small helper objects a layer's config names
HELPER_NAMESPACES = {
    "keras.initializers": keras.initializers,
    "keras.regularizers": keras.regularizers,
    "keras.constraints": keras.constraints,
}
MODEL_CLASSES = {("keras.src.models.functional", "Functional"), ("keras", "Functional"),
                 ("keras.src.models.sequential", "Sequential"), ("keras", "Sequential")}
DTYPE_POLICIES = frozenset({"DTypePolicy", "FloatDTypePolicy"})
#: the largest config accepted, in characters (ResNet-50's is about 200,000)
MAX_CONFIG_CHARS = 20_000_000
#: bounds that keep a handed-back model from exhausting the grader's memory: weights (estimated from
#: the config before anything is built; ResNet-50 has 23.6 million), layers, values per tensor and per
#: setting (ResNet-50's widest layer has 2,048 filters)
MAX_PARAMETERS = 100_000_000
MAX_LAYERS = 3_000
MAX_TENSOR_VALUES = 32_000_000
MAX_SETTING = 16_384


class UngradableModel(ValueError):
    """A model config that the grader refuses to load; the message says why, for the student."""


def load_model(text: str) -> keras.Model:
    """The model described by ``text`` (``model.to_json()``), checked first, loaded with safe_mode=True."""
    if len(text) > MAX_CONFIG_CHARS:
        raise UngradableModel(f"the model's description is {len(text):,} characters long, more than the "
                              f"grader reads ({MAX_CONFIG_CHARS:,}).")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise UngradableModel(f"the model's description isn't valid JSON ({error}).") from None
    check_config(config)
    check_size(config)
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any failure to load is the submission's
        raise UngradableModel(f"Keras can't rebuild your model from its description: "
                              f"{type(error).__name__}: {str(error)[:500]}") from None
    if not isinstance(model, keras.Model):
        raise UngradableModel(f"the description is of a {type(model).__name__}, not of a keras.Model.")
    for layer in model.layers:  # symbolic shapes: what the grader's numeric check would compute
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer used more than once: its inputs were checked
            outputs = []
        for tensor in outputs:
            if _values(tensor.shape) > MAX_TENSOR_VALUES:
                raise UngradableModel(f"layer '{layer.name}' outputs shape {tuple(tensor.shape)}, far bigger than "
                                      "the exercise's: the grader doesn't run it.")
    return model


def check_size(config) -> None:
    """Refuse a config whose weights, layers or settings are far beyond the exercises' (before it's built)."""
    layers = list(_layer_entries(config))
    if len(layers) > MAX_LAYERS:
        raise UngradableModel(f"the model has {len(layers):,} layers, more than the grader reads ({MAX_LAYERS:,}).")
    total = 0
    for entry in layers:
        name = _layer_name(entry) or "?"
        settings = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        for key, value in _numbers(settings):
            if key != "seed" and abs(value) > MAX_SETTING:
                raise UngradableModel(f"layer '{name}' has {key}={value}, far beyond the exercise's values.")
        shapes = [s for s in _shapes(entry) if isinstance(s, list)]
        for shape in shapes:
            if _values(shape) > MAX_TENSOR_VALUES:
                raise UngradableModel(f"layer '{name}' takes shape {shape}, far bigger than the exercise's.")
        channels = max((s[-1] for s in shapes if s and isinstance(s[-1], int)), default=1)
        kernel = settings.get("kernel_size") or [1]
        kernel = [kernel] if isinstance(kernel, int) else kernel
        width = max(int(settings.get(k) or 0) for k in ("filters", "units", "depth_multiplier")) or 0
        total += _product(kernel) * channels * width + 4 * channels
        if entry.get("class_name") == "PReLU":
            total += max((_values(s) for s in shapes), default=0)
    if total > MAX_PARAMETERS:
        raise UngradableModel(f"the model has about {total:,} weights, far more than the exercise's "
                              f"(the grader builds at most {MAX_PARAMETERS:,}).")


def _layer_entries(config):
    """Every layer entry of a functional or sequential model's config, nested models included."""
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
            for entry in inner["layers"]:
                if isinstance(entry, dict):
                    yield entry
                    yield from _layer_entries(entry)


def _shapes(entry):
    """The input shapes a layer entry records (its build_config and its inbound tensors)."""
    build = entry.get("build_config")
    if isinstance(build, dict):
        shape = build.get("input_shape")
        if isinstance(shape, list) and shape and all(isinstance(s, list) for s in shape):
            yield from shape
        else:
            yield shape
    inner = entry.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("batch_shape"), list):
        yield inner["batch_shape"]
    stack = [entry.get("inbound_nodes")]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "__keras_tensor__" and isinstance(item.get("config"), dict):
                yield item["config"].get("shape")
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _numbers(settings, key=None):
    """(key, int) for every integer in a layer's settings, nested ones included."""
    if isinstance(settings, bool):
        return
    if isinstance(settings, int):
        yield key, settings
    elif isinstance(settings, dict):
        for k, v in settings.items():
            yield from _numbers(v, k)
    elif isinstance(settings, list):
        for v in settings:
            yield from _numbers(v, key)


def _product(values) -> int:
    result = 1
    for value in values:
        result *= int(value) if isinstance(value, int) and not isinstance(value, bool) else 1
    return result


def _values(shape) -> int:
    """The number of values of one example of a tensor of this shape (the batch dimension left out)."""
    dims = list(shape)[1:] if shape is not None else []
    if any(d is not None and not isinstance(d, int) for d in dims):
        raise UngradableModel(f"a tensor has the malformed shape {shape!r}.")
    return _product([d for d in dims if d is not None])


def check_config(config, layer: str = "the model") -> None:
    """Raise UngradableModel naming the layer if ``config`` names anything outside the allowlist."""
    if isinstance(config, list):
        for item in config:
            check_config(item, layer)
        return
    if not isinstance(config, dict):
        return
    if "class_name" in config:
        _check_object(config, _layer_name(config) if layer == "the model" and _layer_name(config) else layer)
    for key, value in config.items():
        if key == "layers" and isinstance(value, list):  # a model's layers: name each in messages
            for item in value:
                check_config(item, _layer_name(item) or layer)
        elif isinstance(value, (dict, list)):
            check_config(value, layer)


def _layer_name(entry) -> str | None:
    if not isinstance(entry, dict):
        return None
    inner = entry.get("config")
    name = entry.get("name") or (inner.get("name") if isinstance(inner, dict) else None)
    return name[:100] if isinstance(name, str) else None


def _check_object(config: dict, layer: str) -> None:
    module, class_name = config.get("module"), config.get("class_name")
    registered = config.get("registered_name")
    if not isinstance(class_name, str) or not (module is None or isinstance(module, str)):
        raise UngradableModel(f"layer '{layer}': its description is malformed (class_name {class_name!r}).")
    if class_name == "__keras_tensor__" and module is None:
        return
    if class_name == "__lambda__":
        raise UngradableModel(
            f"layer '{layer}' is a Lambda with a Python lambda function: the grader can't load it safely, so "
            "it can't be graded; write it with keras.layers (e.g. layers.ReLU() or layers.Activation('relu')) "
            "or keras.ops (keras.ops.relu(X)) so it can be graded."
        )
    if class_name == "function":
        function = config.get("config")
        if module in FUNCTION_MODULES and isinstance(function, str) and _builtin_function(module, function):
            return
        raise UngradableModel(
            f"layer '{layer}' is a Lambda calling the function {function!r}: the grader can't load a Lambda's "
            "function safely, so it can't be graded; write it with keras.layers (e.g. layers.ReLU() or "
            "layers.Activation('relu')) or keras.ops (keras.ops.relu(X)) so it can be graded."
        )
    if registered not in (None, class_name) and not (module in ("keras", "keras.layers") and registered is None):
        _custom(layer, module, class_name)
    if module == "keras.layers" and class_name in SAFE_LAYERS:
        return
    if module == "keras" and class_name in DTYPE_POLICIES:
        return
    if (module, class_name) in MODEL_CLASSES:
        return
    if module in HELPER_NAMESPACES and _builtin_class(HELPER_NAMESPACES[module], class_name, "keras.src."):
        return
    if module in OPERATION_MODULES and _builtin_operation(module, class_name):
        return
    _custom(layer, module, class_name)


def _custom(layer, module, class_name):
    origin = f"from module {module!r}" if module else "defined in your code"
    raise UngradableModel(
        f"layer '{layer}' is a custom layer (class {class_name!r} {origin}), or one Keras layer "
        "the grader doesn't accept: it can't be loaded safely, so it can't be graded; write it with "
        "keras.layers (Conv2D, BatchNormalization, Activation, Add, ...) so it can be graded."
    )


def _builtin_class(namespace, class_name: str, module_prefix: str) -> bool:
    value = getattr(namespace, class_name, None)
    return isinstance(value, type) and value.__module__.startswith(module_prefix)


def _builtin_operation(module: str, class_name: str) -> bool:
    """Is ``module.class_name`` one of Keras' operation classes? (the module is a Keras one, allowlisted)"""
    import importlib

    value = getattr(importlib.import_module(module), class_name, None)
    return (isinstance(value, type) and value.__module__ == module
            and issubclass(value, keras.Operation) and not issubclass(value, keras.layers.Layer))


def _builtin_function(module: str, name: str) -> bool:
    import importlib

    value = getattr(importlib.import_module(module), name, None)
    return callable(value) and not isinstance(value, type) and getattr(value, "__module__", "").startswith("keras")
