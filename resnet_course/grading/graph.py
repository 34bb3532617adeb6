"""The graph of a functional model, read in data-flow order, each layer described by what changes its result.

Equivalent styles read the same: ``ReLU()``, ``Activation('relu')``, ``keras.activations.relu`` or
``keras.ops.relu`` are all a "relu" node; ``Add()``, ``layers.add``, ``keras.ops.add`` or ``+`` an "add"
node; ``Dense(n)`` followed by ``Activation('softmax')`` one Dense node with a softmax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

STRICT_NAMES = {"conv", "bn", "pad", "maxpool", "avgpool", "gap", "flatten", "dense", "dropout"}
_ACTIVATIONS = ("relu", "linear", "softmax", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "relu6",
                "leaky_relu", "softplus", "softsign", "hard_sigmoid", "exponential")


@dataclass
class Node:
    """One layer (or operation) of a model, described by what changes its result."""

    index: int
    op: object
    kind: str
    type_name: str
    settings: dict
    inputs: list
    tensor: object
    name: str
    weight_op: object = None
    auto_named: bool = False
    consumers: list = field(default_factory=list)

    @property
    def token(self) -> str:
        if self.kind in ("activation", "other"):
            return f"{self.kind}:{self.type_name}:{self.settings.get('activation', '')}"
        return self.kind

    @property
    def shape(self) -> tuple:
        return tuple(self.tensor.shape)


def _to_snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _probe(function, shape=(2, 12)):
    """Name of the activation computed by ``function`` (None: not a known one)."""
    rng = np.random.default_rng(0)
    # Values from 0.1 to 3000 in size, so that a clipped ReLU or a leaky one shows.
    x = (rng.choice([-1.0, 1.0], size=shape) * 10 ** rng.uniform(-1, 3.5, size=shape)).astype("float32")
    try:
        y = keras.ops.convert_to_numpy(function(keras.ops.convert_to_tensor(x)))
    except Exception:  # noqa: BLE001 - anything the probe can't run is "unknown"
        return None
    if y.shape != x.shape:
        return None
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        candidates = {
            "relu": np.maximum(x, 0),
            "linear": x,
            "softmax": e / e.sum(axis=-1, keepdims=True),
            "sigmoid": 1 / (1 + np.exp(-x)),
            "tanh": np.tanh(x),
        }
    for name, expected in candidates.items():
        if np.allclose(y, expected, rtol=1e-5, atol=1e-6):
            return name
    return None


def _activation_name(function) -> str:
    if function is None:
        return "linear"
    for name in _ACTIVATIONS:
        try:
            if function is keras.activations.get(name):
                return name
        except (ValueError, AttributeError):
            continue
    probed = _probe(function)
    if probed is not None:
        return probed
    return getattr(function, "__name__", type(function).__name__)


def _relu_settings(op):
    negative_slope = float(getattr(op, "negative_slope", 0.0) or 0.0)
    max_value = getattr(op, "max_value", None)
    threshold = float(getattr(op, "threshold", 0.0) or 0.0)
    if negative_slope == 0 and max_value is None and threshold == 0:
        return None
    arguments = []
    if negative_slope:
        arguments.append(f"negative_slope={negative_slope}")
    if max_value is not None:
        arguments.append(f"max_value={max_value}")
    if threshold:
        arguments.append(f"threshold={threshold}")
    return f"ReLU({', '.join(arguments)})"


def _describe(op, node):
    """(kind, type name, settings) of one operation of the graph."""
    if isinstance(op, layers.InputLayer) or node.is_input:
        return "input", "Input", {}
    if isinstance(op, layers.Conv2D):
        kernel = tuple(op.kernel_size)
        padding = op.padding.lower()
        if kernel == (1, 1):
            padding = "valid"  # 'same' pads nothing for a 1x1 kernel: the two give the same result
        return "conv", "Conv2D", {
            "filters": op.filters,
            "kernel_size": kernel,
            "strides": tuple(op.strides),
            "padding": padding,
            "activation": _activation_name(op.activation),
            "use_bias": bool(op.use_bias),
            "dilation_rate": tuple(op.dilation_rate),
            "groups": getattr(op, "groups", 1),
            "data_format": op.data_format,
        }
    if isinstance(op, layers.BatchNormalization):
        rank = len(node.input_tensors[0].shape)
        axis = op.axis
        if isinstance(axis, (list, tuple)):
            axis = tuple(sorted(a % rank for a in axis))
            axis = axis[0] if len(axis) == 1 else axis
        else:
            axis = axis % rank
        return "bn", "BatchNormalization", {
            "axis": axis,
            "epsilon": float(op.epsilon),
            "center": bool(op.center),
            "scale": bool(op.scale),
        }
    if isinstance(op, layers.ReLU) or (type(op).__name__ in ("ReLU", "Relu") and not isinstance(op, layers.Layer)):
        special = _relu_settings(op)
        if special is None:
            return "relu", "ReLU", {}
        return "activation", "ReLU", {"activation": special}
    if isinstance(op, layers.Activation):
        name = _activation_name(op.activation)
        if name == "relu":
            return "relu", "ReLU", {}
        return "activation", "Activation", {"activation": name}
    if isinstance(op, layers.Add) or (
        type(op).__name__ == "Add" and not isinstance(op, layers.Layer) and len(node.input_tensors) == 2
    ):
        return "add", "Add", {}
    if isinstance(op, layers.ZeroPadding2D):
        return "pad", "ZeroPadding2D", {"padding": tuple(tuple(p) for p in op.padding)}
    if isinstance(op, (layers.MaxPooling2D, layers.AveragePooling2D)):
        kind = "maxpool" if isinstance(op, layers.MaxPooling2D) else "avgpool"
        return kind, type(op).__name__, {
            "pool_size": tuple(op.pool_size),
            "strides": tuple(op.strides) if op.strides is not None else tuple(op.pool_size),
            "padding": op.padding.lower(),
        }
    if isinstance(op, layers.GlobalAveragePooling2D):
        return "gap", "GlobalAveragePooling2D", {"keepdims": bool(getattr(op, "keepdims", False))}
    if isinstance(op, layers.Flatten):
        return "flatten", "Flatten", {}
    if isinstance(op, layers.Dense):
        return "dense", "Dense", {
            "units": op.units,
            "activation": _activation_name(op.activation),
            "use_bias": bool(op.use_bias),
        }
    if isinstance(op, layers.Dropout):
        return "dropout", "Dropout", {"rate": float(op.rate)}
    # Anything else without weights that maps a tensor to one of the same shape
    # (a Lambda, keras.ops.maximum(X, 0) ...) is probed numerically.
    if len(node.input_tensors) == 1 and not getattr(op, "weights", None):
        in_shape, out_shape = tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape)
        if in_shape == out_shape and None not in in_shape[1:]:
            tensor = node.input_tensors[0]

            def call(value, node=node, op=op, tensor=tensor):
                args, kwargs = node.arguments.fill_in({id(tensor): value})
                return op(*args, **kwargs)

            if _probe(call, (2,) + in_shape[1:]) == "relu":
                return "relu", "ReLU", {}
    return "other", type(op).__name__, {}


class Graph:
    """A functional model's operations in data-flow order.

    The order is a depth-first walk back from the output in which each Add
    visits its deeper input (the main path) before the other (the shortcut),
    so the reference and a student's model list their layers in the same
    order whichever order they were created in or added in.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.nodes: list[Node] = []
        self._depths: dict[int, int] = {}
        self._index: dict[int, int] = {}
        self._visit(model.outputs[0])
        self._fold_dense_activations()
        for node in self.nodes:
            for i in node.inputs:
                self.nodes[i].consumers.append(node.index)

    @staticmethod
    def _producer(tensor):
        history = tensor._keras_history
        operation = history.operation
        return operation, operation._inbound_nodes[history.node_index]

    def _depth(self, tensor) -> int:
        """Longest path from the model's input to ``tensor`` (iterative: models can be deep)."""
        stack = [tensor]
        while stack:
            top = stack[-1]
            _, node = self._producer(top)
            if id(node) in self._depths:
                stack.pop()
                continue
            missing = [t for t in node.input_tensors if id(self._producer(t)[1]) not in self._depths]
            if missing:
                stack.extend(missing)
                continue
            parents = [self._depths[id(self._producer(t)[1])] for t in node.input_tensors]
            self._depths[id(node)] = 1 + max(parents) if parents else 0
            stack.pop()
        return self._depths[id(self._producer(tensor)[1])]

    def _ordered_parents(self, node) -> list:
        """A node's input tensors, deepest first (the main path before the shortcut)."""
        return sorted(node.input_tensors, key=lambda t: -self._depth(t))

    def _visit(self, output) -> None:
        """Number the nodes in depth-first post-order from ``output`` (iterative)."""
        stack = [(output, False)]
        while stack:
            tensor, expanded = stack.pop()
            op, node = self._producer(tensor)
            if id(node) in self._index:
                continue
            parents = self._ordered_parents(node)
            if not expanded:
                stack.append((tensor, True))
                stack.extend((t, False) for t in reversed(parents))
                continue
            inputs = [self._index[id(self._producer(t)[1])] for t in parents]
            kind, type_name, settings = _describe(op, node)
            name = op.name
            snake = _to_snake_case(type(op).__name__)
            auto = bool(re.fullmatch(rf"{re.escape(snake)}(_\d+)?", name))
            item = Node(
                index=len(self.nodes), op=op, kind=kind, type_name=type_name, settings=settings, inputs=inputs,
                tensor=tensor, name=name, weight_op=op if getattr(op, "weights", None) else None,
                auto_named=auto,
            )
            self._index[id(node)] = item.index
            self.nodes.append(item)

    def _fold_dense_activations(self) -> None:
        """Dense(n) followed by Activation('softmax') counts as Dense(n, activation='softmax')."""
        users: dict[int, int] = {}
        for node in self.nodes:
            for i in node.inputs:
                users[i] = users.get(i, 0) + 1
        removed = set()
        for node in self.nodes:
            if node.kind not in ("relu", "activation") or len(node.inputs) != 1:
                continue
            dense = self.nodes[node.inputs[0]]
            if dense.kind == "dense" and dense.settings["activation"] == "linear" and users.get(dense.index) == 1:
                dense.settings["activation"] = "relu" if node.kind == "relu" else node.settings["activation"]
                dense.tensor = node.tensor
                removed.add(node.index)
        if not removed:
            return
        remap, kept = {}, []
        for node in self.nodes:
            if node.index in removed:
                remap[node.index] = remap[node.inputs[0]]
                continue
            remap[node.index] = len(kept)
            kept.append(node)
        for node in kept:
            node.inputs = [remap[i] for i in node.inputs]
            node.index = remap[node.index]
        self.nodes = kept

    def chain(self, start: int) -> list[int]:
        """Node indices walking back from ``start`` through single-input layers."""
        chain = [start]
        while len(self.nodes[chain[-1]].inputs) == 1:
            chain.append(self.nodes[chain[-1]].inputs[0])
        return chain

    def branches(self, add: int):
        """(main path, shortcut, fork) of the Add at index ``add``, each path in data-flow order."""
        node = self.nodes[add]
        if len(node.inputs) != 2:
            return [], [], None
        chain_a, chain_b = self.chain(node.inputs[0]), self.chain(node.inputs[1])
        in_b = set(chain_b)
        fork = next((i for i in chain_a if i in in_b), None)
        if fork is None:
            return chain_a[::-1], chain_b[::-1], None
        return chain_a[: chain_a.index(fork)][::-1], chain_b[: chain_b.index(fork)][::-1], fork

    def adds(self) -> list[int]:
        return [node.index for node in self.nodes if node.kind == "add"]

    def count_params(self):
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        non_trainable = sum(int(np.prod(w.shape)) for w in self.model.non_trainable_weights)
        return trainable + non_trainable, trainable, non_trainable


def node_params(node: Node):
    op = node.weight_op
    if op is None:
        return 0, 0
    trainable = sum(int(np.prod(w.shape)) for w in op.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in op.non_trainable_weights)
    return trainable, non_trainable


