"""The diagnosis of one difference between the reference's graph and the student's: wrong settings,
missing, extra or misplaced layers, names, parameter counts and wiring, each with its own message."""

from __future__ import annotations

from resnet_course.grading.graph import STRICT_NAMES, Node, node_params
from resnet_course.grading.messages import NAME_PATTERN, ROLE_OF_BRANCH, Context, NoDiagnosis, layer_text, named

# -- settings --


def check_settings(ctx: Context, ref: Node, st: Node) -> None:
    for key, expected in ref.settings.items():
        found = st.settings.get(key)
        if found == expected:
            continue
        if ref.kind == "conv":
            _conv_failure(ctx, ref, st, key, expected, found)
        if ref.kind == "bn" and key == "axis":
            ctx.fail(
                f"{ctx.locate(ref, st)}: BatchNormalization normalises axis {found}, expected axis {expected} "
                "(the channels axis in NHWC).",
                f"use BatchNormalization(axis={expected}).",
            )
        if ref.kind == "dense" and key == "activation":
            ctx.fail(
                f"{ctx.locate(ref, st)}: the Dense layer has activation {found!r}, expected {expected!r}; "
                f"without softmax the model outputs scores, not probabilities.",
                f"Dense(classes, activation='softmax', name='fc' + str(classes)).",
            )
        if ref.kind == "dense" and key == "units":
            ctx.fail(
                f"{ctx.locate(ref, st)}: the Dense layer has {found} units, expected {expected} (classes).",
                "use Dense(classes, ...), with the classes argument, not a fixed number.",
            )
        if ref.kind == "pad" and key == "padding":
            ctx.fail(
                f"{ctx.locate(ref, st)}: ZeroPadding2D pads {found}, expected {expected}.",
                f"ZeroPadding2D(({expected[0][0]}, {expected[1][0]})).",
            )
        ctx.fail(
            f"{ctx.locate(ref, st)}: {ref.type_name} has {key}={found!r}, expected {key}={expected!r}.",
            f"create it as {layer_text(ref)}.",
        )


def _conv_failure(ctx: Context, ref: Node, st: Node, key, expected, found):
    stage, block = ctx.stage_block(ref)
    match = NAME_PATTERN.match(ref.name)
    branch = match.group(4) if match else None
    where = ctx.locate(ref, st)
    if key == "filters":
        role = ROLE_OF_BRANCH.get(branch)
        if ctx.mode == "model" and block:
            convs = [ctx.ref_node(f"res{block}_branch2{k}") for k in "abc"]
            stage_filters = [c.settings["filters"] for c in convs if c is not None]
            ctx.fail(
                f"Wrong filter count in stage {stage}: {where} has {found} filters, expected {expected}"
                + (f" ({role} of stage {stage})" if role else "") + ".",
                f"stage {stage} uses filters {stage_filters}.",
            )
        if role and ctx.mode == "block":
            F = list(ctx.case.filters)
            mixed = found in F
            ctx.fail(
                f"{where} has {found} filters, expected {expected} ({role}, with filters = {F}).",
                ("did you mix up F1, F2 and F3? " if mixed else "")
                + "The first 1x1 conv has F1 filters, the fxf conv F2, the last 1x1 conv F3"
                + (" and the shortcut's conv F3 too." if ctx.fn_name == "convolutional_block" else "."),
            )
        ctx.fail(f"{where} has {found} filters, expected {expected}.", f"create it as {layer_text(ref)}.")
    if key == "kernel_size":
        if branch == "2b":
            f = ctx.case.f if ctx.mode == "block" else expected[0]
            ctx.fail(
                f"{where} has kernel_size {found}, expected {expected} = (f, f), with f={f} in this case.",
                "the middle conv is f x f: use kernel_size=(f, f), with the argument f, not a fixed 3.",
            )
        if branch:
            ctx.fail(
                f"{where} has kernel_size {found}, expected {expected}: this conv is 1x1.",
                "the first and last convs of the main path, and the shortcut's conv, are 1x1 convs.",
            )
        ctx.fail(f"{where} has kernel_size {found}, expected {expected}.", f"create it as {layer_text(ref)}.")
    if key == "strides":
        _stride_failure(ctx, ref, st, expected, found, branch, block)
    if key == "padding":
        if branch == "2b":
            ctx.fail(
                f"{where} has padding {found!r}, expected {expected!r}.",
                "the fxf conv uses padding='same' so that it keeps the height and width, and the main path "
                "can be added to the shortcut.",
            )
        ctx.fail(f"{where} has padding {found!r}, expected {expected!r}.", f"create it as {layer_text(ref)}.")
    if key == "activation":
        ctx.fail(
            f"{where} has activation {found!r}, expected none ({expected!r}).",
            "keep the conv linear: the ReLU comes after the BatchNormalization, as a layer of its own.",
        )
    if key == "use_bias":
        ctx.fail(
            f"{where} has use_bias={found}, expected use_bias={expected}.",
            "the course's convs keep their bias (use_bias=True, Conv2D's default).",
        )
    ctx.fail(f"{where}: Conv2D has {key}={found!r}, expected {key}={expected!r}.", f"create it as {layer_text(ref)}.")


def _stride_failure(ctx: Context, ref, st, expected, found, branch, block):
    where = ctx.locate(ref, st)
    s_expected = expected[0] if len(set(expected)) == 1 else expected
    if branch == "2a" and block:
        st_2b = ctx.student_of(ctx.ref_node(f"res{block}_branch2b"))
        st_1 = ctx.student_of(ctx.ref_node(f"res{block}_branch1"))
        if found == (1, 1) and expected != (1, 1) and st_2b is not None and st_2b.settings["strides"] == expected:
            yours = "" if st_2b.name == f"res{block}_branch2b" else f", yours is named '{st_2b.name}'"
            ctx.fail(
                f"{where}: the stride s={s_expected} is on 'res{block}_branch2b' (the fxf conv{yours}) but the "
                f"course's ResNet v1 puts it on the first 1x1 conv 'res{block}_branch2a'; moving it to the fxf "
                "conv is ResNet v1.5.",
                "use strides=(s, s) on the first 1x1 conv and strides=(1, 1) on the fxf conv.",
            )
        if st_1 is not None and st_1.settings["strides"] == found:
            if ctx.mode == "model":
                stage = ctx.stage_block(ref)[0]
                numbers, strides = _stage_strides(ctx)
                ctx.fail(
                    f"Wrong stride in stage {stage}: the convolutional block res{block} uses s={found[0]}, "
                    f"expected s={s_expected} ({where} has strides {found}).",
                    f"the convolutional blocks of stages {numbers} have s = {strides}; pass s to "
                    "convolutional_block.",
                )
            ctx.fail(
                f"{where} and the shortcut conv have strides {found}, expected {expected}: the block "
                f"doesn't use s={s_expected}.",
                "use strides=(s, s), with the argument s, on the first 1x1 conv and on the shortcut's conv.",
            )
    if branch == "2b":
        ctx.fail(
            f"{where} has strides {found}, expected {expected}: in ResNet v1 the fxf conv has stride 1.",
            "the stride s of the convolutional block goes on the first 1x1 conv (and the shortcut's conv).",
        )
    if branch == "1":
        ctx.fail(
            f"{where}: the shortcut's conv has strides {found}, expected {expected} = (s, s).",
            "the shortcut must downsample like the main path: Conv2D(F3, (1, 1), strides=(s, s)).",
        )
    if branch == "2a" and expected != (1, 1):
        ctx.fail(
            f"{where} has strides {found}, expected {expected} = (s, s).",
            "the convolutional block downsamples with its first 1x1 conv, strides=(s, s), and with the "
            "shortcut's 1x1 conv, strides=(s, s).",
        )
    if branch == "2a" or branch == "2c":
        ctx.fail(
            f"{where} has strides {found}, expected {expected}.",
            "only the convolutional block's first 1x1 conv and shortcut conv have stride s; the others "
            "(and every conv of the identity block) have stride 1.",
        )
    ctx.fail(f"{where} has strides {found}, expected {expected}.", f"create it as {layer_text(ref)}.")


def _stage_strides(ctx: Context):
    """('2, 3, 4, 5', '1, 2, 2, 2'): the stages and their convolutional blocks' strides."""
    stages, strides = [], []
    for node in ctx.R.nodes:
        match = NAME_PATTERN.match(node.name)
        if node.kind == "conv" and match and match.group(4) == "1":
            stages.append(match.group(2))
            strides.append(str(node.settings["strides"][0]))
    return ", ".join(stages), ", ".join(strides)


# -- structure (missing, extra or misplaced layers) --


def structure_failure(ctx: Context, opcodes, position: int) -> None:
    R, S = ctx.R, ctx.S
    tag, i1, i2, j1, j2 = opcodes[position]
    if ctx.truncated and j2 >= len(S.nodes):
        raise NoDiagnosis()
    deleted = R.nodes[i1:i2] if tag in ("delete", "replace") else []
    inserted = S.nodes[j1:j2] if tag in ("insert", "replace") else []

    # A ReLU between the main path and the Add, and none after the Add.
    for node in inserted[:1]:
        if node.kind == "relu" and any(S.nodes[c].kind == "add" for c in node.consumers):
            add = next(S.nodes[c] for c in node.consumers if S.nodes[c].kind == "add")
            after = [S.nodes[c] for c in add.consumers]
            ref_add = _ref_of(ctx, add)
            ref_name = ref_add.name if ref_add is not None else add.name
            if not any(c.kind == "relu" for c in after):
                ctx.fail(
                    f"The Add '{ref_name}' isn't followed by a ReLU, but a ReLU "
                    f"('{node.name}', {ctx.student_where(node)}) sits before the Add: "
                    "the ReLU must come after the Add, on the sum.",
                    "end the main path with BatchNormalization, then X = Add()([X, X_shortcut]) and "
                    "X = Activation('relu')(X).",
                )
            ctx.fail(
                f"An extra ReLU ('{node.name}', {ctx.student_where(node)}) sits before the Add '{ref_name}': "
                "the branches end with BatchNormalization (or, for the identity shortcut, X itself).",
                "remove it: the only ReLU at the end of the block is the one after the Add.",
            )
    # A missing final ReLU.
    for node in deleted[:1] if tag == "delete" else []:
        if node.kind == "relu" and node.inputs and R.nodes[node.inputs[0]].kind == "add":
            add = R.nodes[node.inputs[0]]
            ctx.fail(
                f"{ctx.locate(node)} is missing: the Add '{add.name}' must be followed by a ReLU, and your "
                f"block {'ends with the Add' if ctx.mode == 'block' else 'goes on after the Add'} without one "
                "(missing final ReLU).",
                "after X = Add()([X, X_shortcut]), apply X = Activation('relu')(X).",
            )
    # The shortcut of a convolutional block.
    names = {node.name for node in deleted}
    for node in deleted[:1]:
        match = NAME_PATTERN.match(node.name)
        if not (match and match.group(4) == "1"):
            continue
        block = match.group(2) + match.group(3)
        if node.kind == "conv":
            bn_missing = f"bn{block}_branch1" in names
            ctx.fail(
                f"{ctx.locate(node)} is missing: the shortcut of the convolutional block has no projection"
                + ("" if bn_missing else " conv")
                + f"; expected {layer_text(node)} named '{node.name}'"
                + (f" and BatchNormalization named 'bn{block}_branch1'" if bn_missing else "")
                + " on the shortcut.",
                "in the convolutional block the shortcut is X_shortcut = Conv2D(F3, (1, 1), strides=(s, s))"
                "(X_shortcut) followed by BatchNormalization(axis=3), unlike the identity block's, which adds "
                "X unchanged.",
            )
        if node.kind == "bn":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the shortcut has no BatchNormalization after its conv "
                f"'res{block}_branch1'.",
                "the shortcut's projection is Conv2D(F3, (1, 1), strides=(s, s)) followed by "
                "BatchNormalization(axis=3).",
            )
    # Two layers in the wrong order.
    if (
        i1 + 1 < len(R.nodes) and j1 + 1 < len(S.nodes)
        and R.nodes[i1].token == S.nodes[j1 + 1].token and R.nodes[i1 + 1].token == S.nodes[j1].token
        and R.nodes[i1].token != R.nodes[i1 + 1].token
    ):
        first, second = R.nodes[i1], R.nodes[i1 + 1]
        ctx.fail(
            f"{ctx.locate(first)}: the layers are in the wrong order around here: expected "
            f"{layer_text(first)} then {layer_text(second)}, found them the other way round.",
            "each conv is followed by BatchNormalization, then (except the last one before the Add) ReLU.",
        )
    before = R.nodes[R.nodes[i1].inputs[0]] if i1 < len(R.nodes) and R.nodes[i1].inputs else None
    if tag == "delete" or (tag == "replace" and deleted):
        node = deleted[0]
        found = S.nodes[j1] if j1 < len(S.nodes) else None
        found_text = f"found {named(found)} ({ctx.student_where(found)})" if found is not None else "found nothing"
        if node.name == "pool1" or node.kind == "maxpool":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the stem has no max-pool; expected {layer_text(node)} named "
                f"'{node.name}' after '{R.nodes[node.inputs[0]].name}', {found_text}.",
                "the stem is ZeroPadding2D((3, 3)), Conv2D(64, (7, 7), strides=(2, 2)), BatchNormalization, "
                "ReLU, MaxPooling2D((3, 3), strides=(2, 2)).",
            )
        if node.name == "conv1_pad" or node.kind == "pad":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the stem has no zero-padding; expected {layer_text(node)} "
                f"named '{node.name}' before the first conv, {found_text}.",
                "start the stem with X = ZeroPadding2D((3, 3))(X_input).",
            )
        previous = f" after {named(before)}" if before is not None else ""
        if tag == "replace":
            ctx.fail(
                f"{ctx.locate(node)}: expected {layer_text(node)}{previous}, {found_text}.",
                _kind_hint(node),
            )
        ctx.fail(f"{ctx.locate(node)} is missing: expected {layer_text(node)}{previous}, {found_text}.",
                 _kind_hint(node))
    node = inserted[0]
    expected_here = R.nodes[i1] if i1 < len(R.nodes) else None
    expected_text = (
        f"the reference has {named(expected_here)} there" if expected_here is not None
        else "the reference ends there"
    )
    previous = S.nodes[node.inputs[0]] if node.inputs else None
    after = f" after {named(previous)}" if previous is not None else ""
    ctx.fail(
        f"Unexpected layer {named(node)} ({ctx.student_where(node)}){after}: {expected_text}.",
        "remove it, or compare the order of your layers with the reference's.",
    )


def _ref_of(ctx: Context, st: Node):
    for i, j in ctx.mapping.items():
        if j == st.index:
            return ctx.R.nodes[i]
    return None


def _kind_hint(node: Node) -> str:
    if node.kind == "bn":
        return "every conv is followed by BatchNormalization(axis=3)."
    if node.kind == "relu" and NAME_PATTERN.match(node.name) and NAME_PATTERN.match(node.name).group(4) is None:
        return "the block ends with a plain ReLU after the Add: X = Activation('relu')(X)."
    if node.kind == "relu":
        return "the first two convs of the main path are each followed by BatchNormalization and a ReLU."
    if node.kind == "conv":
        return "the main path has three convs: 1x1 (F1), f x f (F2), 1x1 (F3)."
    if node.kind == "flatten":
        return "Flatten turns the pooled feature map into a vector for the Dense layer."
    if node.kind == "avgpool":
        return "the head is AveragePooling2D((2, 2)), Flatten, Dense(classes, activation='softmax')."
    return f"add {layer_text(node)} there."


# -- names, parameters, wiring --


def check_name(ctx: Context, ref: Node, st: Node) -> None:
    if ref.kind not in STRICT_NAMES or st.name == ref.name:
        return
    where = f"{ctx.position(ref)}, {ctx.where(ref)}"
    text = f"{layer_text(ref)} ({where}): expected the name '{ref.name}', found '{st.name}'"
    if st.auto_named:
        text += " (an automatic name: the layer was created without name=)"
        hint = f"create it with name='{ref.name}'."
    else:
        hint = "check the spelling."
    match_ref, match_st = NAME_PATTERN.match(ref.name), NAME_PATTERN.match(st.name)
    if match_ref and match_st and match_ref.group(2, 3) != match_st.group(2, 3):
        hint = (
            f"build the names from the stage and block arguments (here stage={match_ref.group(2)}, "
            f"block={match_ref.group(3)!r}): 'res' + str(stage) + block + '_branch2a', "
            "'bn' + str(stage) + block + '_branch2a' ..."
        )
    elif match_ref:
        hint += (
            " The names are res{stage}{block}_branch2a/2b/2c for the main path's convs, "
            "bn{stage}{block}_branch2a/2b/2c for their batch norms, and _branch1 for the shortcut's."
        )
    ctx.fail(text + ".", hint)


def check_params(ctx: Context, pairs) -> None:
    expected, found = ctx.R.count_params(), ctx.S.count_params()
    if expected == found:
        return
    for ref, st in pairs:
        e, f = node_params(ref), node_params(st)
        if e != f:
            ctx.fail(
                f"{ctx.locate(ref, st)} has {f[0]:,} trainable and {f[1]:,} non-trainable parameters, "
                f"expected {e[0]:,} and {e[1]:,}.",
                "check the layer's settings (use_bias, center, scale) and that it is trainable.",
            )
    what = "block" if ctx.mode == "block" else "model"
    ctx.fail(
        f"Your {what} has {found[0]:,} parameters ({found[1]:,} trainable, {found[2]:,} non-trainable), "
        f"expected {expected[0]:,} ({expected[1]:,} trainable, {expected[2]:,} non-trainable).",
        "a layer's weights may be shared or frozen (trainable=False).",
    )


def check_wiring(ctx: Context, ref: Node, st: Node) -> None:
    inverse = {j: i for i, j in ctx.mapping.items()}
    found = [inverse.get(j) for j in st.inputs]
    expected = list(ref.inputs)
    same = sorted(found, key=str) == sorted(expected, key=str) if ref.kind == "add" else found == expected
    if same:
        return

    def text(i):
        return named(ctx.R.nodes[i]) if i is not None else "a layer of yours"

    if ref.kind == "add":
        found_names = " and ".join(_named_student(ctx, j) for j in st.inputs)
        expected_names = " and ".join(text(i) for i in expected)
        hint = (
            "save the block's input first (X_shortcut = X), run the main path on X, then "
            "X = Add()([X, X_shortcut])."
        )
        ctx.fail(
            f"The Add '{ref.name}' ({ctx.position(ref)}) adds {found_names}, expected {expected_names}.",
            hint,
        )
    ctx.fail(
        f"{ctx.locate(ref, st)} takes its input from {', '.join(_named_student(ctx, j) for j in st.inputs)}, "
        f"expected from {', '.join(text(i) for i in expected)}.",
        "each layer is applied to the output of the layer before it: X = Layer(...)(X).",
    )


def _named_student(ctx: Context, j: int) -> str:
    node = ctx.S.nodes[j]
    return named(node)


