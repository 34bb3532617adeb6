"""The comparison of a student's model with the reference, in the order the grader reports differences:
stages, layer types and settings, names, parameters, wiring, shapes, then the numbers."""

from __future__ import annotations

import difflib

import keras
import numpy as np

from resnet_course.grading.diagnosis import (
    check_name,
    check_params,
    check_settings,
    check_wiring,
    structure_failure,
)
from resnet_course.grading.graph import Graph
from resnet_course.grading.messages import NAME_PATTERN, Context, Failure, shape_text


def compare_graphs(ctx: Context) -> None:
    R, S = ctx.R, ctx.S
    _check_main_path_overwritten(ctx)
    if ctx.mode == "model":
        _check_stages(ctx)
    compare_layers(ctx)
    pairs = [(R.nodes[i], S.nodes[j]) for i, j in sorted(ctx.mapping.items())]
    # 2. names, all of them in one message: a model written from an older template gets every
    # renaming at once instead of one per run.
    _check_names(ctx, pairs)
    # 3. parameters.
    check_params(ctx, pairs)
    # 4. wiring.
    for ref, st in pairs:
        check_wiring(ctx, ref, st)
    # 5. shapes (after the wiring, a difference here would be a surprise).
    for ref, st in pairs:
        if ref.shape[1:] != st.shape[1:]:
            ctx.fail(
                f"{ctx.locate(ref, st)} outputs shape {shape_text(st.shape)}, expected {shape_text(ref.shape)}.",
                "compare the layers just before it with the reference.",
            )
    # 6. numbers.
    _check_numbers(ctx, pairs)


def _check_names(ctx: Context, pairs) -> None:
    wrong = []
    for ref, st in pairs:
        try:
            check_name(ctx, ref, st)
        except Failure as failure:
            wrong.append(failure)
    if len(wrong) == 1:
        raise wrong[0]
    if wrong:
        hints = {failure.hint for failure in wrong}
        if len(hints) == 1:  # one fix for all of them: said once, as the hint
            listed = "\n".join(f"- {failure.text}" for failure in wrong)
            hint = hints.pop()
        else:
            listed = "\n".join(f"- {failure.text.rstrip('.')}; {failure.hint}" for failure in wrong)
            hint = "rename all of them, then run the test again."
        ctx.fail(f"{len(wrong)} layers don't have the course's names:\n{listed}", hint)


def _check_main_path_overwritten(ctx: Context) -> None:
    """An Add whose two inputs both come out of one conv: the shortcut was added to itself.

    In every residual block the two paths part at the block's input. When they part at a conv,
    the usual cause is ``X = BatchNormalization(...)(X_shortcut)``: the shortcut's batch norm was
    assigned to X, so the main path's layers no longer reach the output (and the model has none
    of them). Said first, before the missing main path is diagnosed as missing layers."""
    S = ctx.S
    for add in S.adds():
        _, _, fork = S.branches(add)
        if fork is None or S.nodes[fork].kind != "conv":
            continue
        conv, add_node = S.nodes[fork], S.nodes[add]
        ctx.fail(
            f"Your Add '{add_node.name}' adds the output of the conv '{conv.name}' to something computed "
            f"from that same conv: both of its inputs come from '{conv.name}', so the main path's layers "
            "don't reach the output (they aren't in your model at all).",
            "a line like `X = BatchNormalization(...)(X_shortcut)` overwrote the main path's X with the "
            "shortcut: assign the shortcut's layers to X_shortcut (X_shortcut = BatchNormalization(...)"
            "(X_shortcut)) and keep X for the main path.",
        )


def compare_layers(ctx: Context) -> None:
    """Align the two graphs' layers and check each one's type and settings, in data-flow order."""
    R, S = ctx.R, ctx.S
    if len(S.nodes) == 1 and len(R.nodes) > 1 and not ctx.truncated and ctx.full is None:
        ctx.fail(
            f"Your {'block' if ctx.mode == 'block' else 'model'} returns its input unchanged: it has no layers, "
            f"expected {len(R.nodes) - 1}.",
            "apply each layer to the output of the one before (X = Layer(...)(X)) and return the last X.",
        )
    matcher = difflib.SequenceMatcher(None, [n.token for n in R.nodes], [n.token for n in S.nodes], autojunk=False)
    opcodes = matcher.get_opcodes()
    for tag, i1, i2, j1, _ in opcodes:
        if tag == "equal":
            for k in range(i2 - i1):
                ctx.mapping[i1 + k] = j1 + k
    # 1. layer types and settings, in data-flow order.
    for position, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            for k in range(i2 - i1):
                check_settings(ctx, R.nodes[i1 + k], S.nodes[j1 + k])
        else:
            structure_failure(ctx, opcodes, position)


def _check_stages(ctx: Context) -> None:
    """ResNet-50 only: the number of stages and of identity blocks in each."""
    R, S = ctx.R, ctx.S

    def stages(graph):
        before, result = [], []
        for add in graph.adds():
            _, shortcut, _ = graph.branches(add)
            if shortcut:
                result.append([add])
            elif result:
                result[-1].append(add)
            else:
                before.append(add)
        return before, result

    _, ref_stages = stages(R)
    st_before, st_stages = stages(S)
    names = [[R.nodes[a].name for a in stage] for stage in ref_stages]
    counts = [len(stage) - 1 for stage in ref_stages]
    counts_text = ", ".join(str(c) for c in counts)
    first_stage = int(NAME_PATTERN.match(names[0][0]).group(2))
    stage_numbers = [first_stage + k for k in range(len(names))]
    if not S.adds():
        ctx.fail(
            "Your model has no Add, so no residual block: expected "
            f"{sum(len(n) for n in names)} blocks in {len(names)} stages.",
            "build each stage with convolutional_block and identity_block.",
        )
    if st_before:
        ctx.fail(
            f"Your model has {len(st_before)} identity block(s) before its first convolutional block; "
            f"stage {first_stage} must start with the convolutional block {names[0][0]}.",
            "each stage is one convolutional_block followed by identity_blocks.",
        )
    if len(st_stages) != len(names):
        ctx.fail(
            f"Wrong number of stages: your model has {len(st_stages)} convolutional blocks (blocks whose "
            f"shortcut has a projection), expected {len(names)}, one at the start of each stage: "
            + ", ".join(n[0] for n in names) + ".",
            f"ResNet-50 has {len(names)} stages, each a convolutional block followed by "
            f"{counts_text} identity blocks.",
        )
    for number, ref_stage, st_stage in zip(stage_numbers, names, st_stages):
        if len(ref_stage) != len(st_stage):
            found = [S.nodes[a].name for a in st_stage[1:]]
            ctx.fail(
                f"Wrong number of identity blocks in stage {number}: found {len(st_stage) - 1} after the "
                f"convolutional block {ref_stage[0]}, expected {len(ref_stage) - 1} "
                f"({', '.join(ref_stage[1:])}). Your stage {number} has: {', '.join(found) or 'none'}.",
                f"ResNet-50 has {counts_text} identity blocks in stages "
                f"{', '.join(str(n) for n in stage_numbers)}; check the calls (or the loop) of stage {number}.",
            )




# -- numbers --


def randomise(graph: Graph, seed: int = 0) -> None:
    """Random batch-norm statistics and biases, so that inference mode tests them too."""
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        op = node.weight_op
        if op is None:
            continue
        for variable in op.weights:
            name = variable.name.split("/")[-1]
            shape = tuple(variable.shape)
            if name == "gamma" or name == "moving_variance":
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            else:
                continue
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _check_numbers(ctx: Context, pairs) -> None:
    randomise(ctx.R)
    for ref, st in pairs:
        if ref.weight_op is None:
            continue
        weights = ref.weight_op.get_weights()
        try:
            st.weight_op.set_weights(weights)
        except Exception as exc:  # noqa: BLE001
            ctx.fail(
                f"{ctx.locate(ref, st)}: can't copy the reference's weights into your layer: {exc}",
                "compare the layer's settings with the reference's.",
            )
    pairs = [(ref, st) for ref, st in pairs if ref.kind != "input"]
    shape = (2,) + tuple(ctx.reference.inputs[0].shape[1:])
    x = np.random.default_rng(1).normal(0.0, 1.0, shape).astype("float32")
    ref_probe = keras.Model(ctx.reference.inputs[0], [ref.tensor for ref, _ in pairs])
    st_probe = keras.Model(ctx.student.inputs[0], [st.tensor for _, st in pairs])
    for mode, training in (("inference", False), ("training", True)):
        expected = [keras.ops.convert_to_numpy(y) for y in ref_probe(x, training=training)]
        found = [keras.ops.convert_to_numpy(y) for y in st_probe(x, training=training)]
        for (ref, st), e, f in zip(pairs, expected, found):
            tolerance = 1e-4 * max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
            if e.shape != f.shape or not np.allclose(f, e, rtol=1e-4, atol=tolerance):
                difference = float(np.max(np.abs(f - e))) if e.shape == f.shape else float("nan")
                ctx.fail(
                    f"{ctx.locate(ref, st)} computes other numbers than the reference in {mode} mode "
                    f"(training={training}), with the same weights: largest difference {difference:.3g}.",
                    "its type and settings match the reference's, so look at how it is called (a fixed "
                    "training= argument, a custom function, a Lambda).",
                )
