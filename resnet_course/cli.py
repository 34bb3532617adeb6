"""The ``resnet-course`` command line (also ``python -m resnet_course``).

    resnet-course data fetch cifar10          download if missing, decode, cache, summarise
    resnet-course data info all               what is on disk: form, shapes, classes, cache
    resnet-course train --dataset signs --profile quick --out runs/signs   (--backend auto, --devices 1)
    resnet-course evaluate runs/signs/model.keras --dataset signs
    resnet-course predict runs/signs/model.keras hand.jpg
    resnet-course check                       grade the reference ResNet-50 with the course's grader

Each command is added by one ``_add_<command>_parser(subcommands)`` function that sets
``handler`` to a function taking the parsed arguments and returning an exit code. Errors
meant for the user (``USER_ERRORS``) print one paragraph, without a traceback, and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from resnet_course.backends import BACKENDS
from resnet_course.datasets import DATASET_NAMES, DatasetError
from resnet_course.grading.command import add_grade_parser

# Exceptions whose message is the whole story for the user: no traceback. The training
# functions raise ValueError and FileNotFoundError for bad arguments, missing models and images.
USER_ERRORS: tuple[type[BaseException], ...] = (DatasetError, ValueError, FileNotFoundError)
EXIT_USER_ERROR = 2


def _dataset_choices(value: str) -> list[str]:
    if value == "all":
        return list(DATASET_NAMES)
    if value not in DATASET_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {value!r}: choose {', '.join(DATASET_NAMES)} or all"
        )
    return [value]


def _run_data_fetch(args: argparse.Namespace) -> int:
    from resnet_course.datasets import describe_dataset

    return _for_each_dataset(args, lambda name: describe_dataset(name, args.data_dir, download=True))


def _run_data_info(args: argparse.Namespace) -> int:
    from resnet_course.datasets import describe_dataset

    return _for_each_dataset(args, lambda name: describe_dataset(name, args.data_dir, download=False))


def _for_each_dataset(args: argparse.Namespace, describe) -> int:
    """Describe every requested dataset, reporting each failure and carrying on."""
    failed = False
    for index, name in enumerate(args.name):
        if index:
            print()
        started = time.perf_counter()
        try:
            info = describe(name)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        print(info.format())
        print(f"  loaded in {time.perf_counter() - started:.2f} s")
    return EXIT_USER_ERROR if failed else 0


def _add_data_parser(subcommands: argparse._SubParsersAction) -> None:
    data = subcommands.add_parser(
        "data",
        help="fetch or inspect the course's datasets",
        description="Fetch or inspect SIGNS, CIFAR-10 and FER-2013.",
    )
    actions = data.add_subparsers(dest="action", required=True, metavar="{fetch,info}")
    for action, handler, summary in (
        ("fetch", _run_data_fetch,
         "download a dataset if it is missing, decode and cache it, and summarise it"),
        ("info", _run_data_info,
         "summarise the copy on disk (no download): form, shapes, dtypes, class counts, cache"),
    ):
        parser = actions.add_parser(action, help=summary, description=summary)
        parser.add_argument(
            "name", type=_dataset_choices, metavar="NAME",
            help=f"{', '.join(DATASET_NAMES)} or all",
        )
        _add_data_dir_option(parser)
        parser.set_defaults(handler=handler)


def _add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="folder holding signs/, cifar10/, fer2013/ (default: $RESNET_COURSE_DATA, "
        "else datasets/ in the repository)",
    )


def _run_train(args: argparse.Namespace) -> int:
    import json

    from resnet_course import training

    metrics = training.train(
        args.dataset, args.profile, args.out, epochs=args.epochs, batch_size=args.batch_size,
        data_dir=args.data_dir, seed=args.seed, backend=args.backend, devices=args.devices,
        time_budget=args.time_budget,
    )
    keys = ("test_accuracy", "test_accuracy_flip_tta", "train_seconds", "epochs", "best_epoch", "precision")
    summary = {key: metrics[key] for key in keys if metrics.get(key) is not None}
    print(json.dumps(summary, indent=2))
    print(f"Wrote the model, metrics.json, history.csv and plots to {args.out}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from resnet_course import training

    result = training.evaluate(args.model, args.dataset, args.data_dir, batch_size=args.batch_size,
                               flip_tta=args.flip_tta)
    how = " with flip test-time augmentation" if result["flip_tta"] else ""
    print(f"test accuracy {result['test_accuracy']:.4f} on {result['n_test']} images{how} "
          f"(loss {result['test_loss']:.4f})")
    for name, accuracy in result["per_class_accuracy"].items():
        print(f"  {name:>10}: " + ("no test images" if accuracy is None else f"{accuracy:.3f}"))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from resnet_course import training

    results = training.predict(args.model, args.images, top=args.top)
    print(training.format_predictions(args.images, results))
    return 0


def _add_training_parsers(subcommands: argparse._SubParsersAction) -> None:
    from resnet_course.datasets import DATASET_NAMES as datasets

    profiles = ("quick", "full", "ci")
    train = subcommands.add_parser(
        "train", help="train a recipe on a dataset and write the model, metrics and plots",
        description="Train the recipe for a dataset and profile. Writes model.keras, metrics.json, "
        "history.csv, learning_curves.png and confusion_matrix.png to --out.",
    )
    train.add_argument("--dataset", required=True, choices=datasets)
    train.add_argument("--profile", default="quick", choices=profiles,
                       help="quick: a laptop CPU, minutes; full: a GPU; ci: a tiny smoke run (default: quick)")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    train.add_argument("--epochs", type=int, default=None,
                       help="train exactly this many epochs (the recipe's time budget is then off)")
    train.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                       help="train the most epochs (up to the recipe's, or --epochs) that fit in this many "
                       "minutes here, timed from a few steps first; 0: no budget (default: the recipe's: "
                       "5 for signs quick, 30 for cifar10 and fer2013 quick, none otherwise)")
    train.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    train.add_argument("--seed", type=int, default=0, help="the same seed gives the same result on a CPU")
    train.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                       help="Keras backend; auto: the fastest installed one for this machine, from the "
                       "table benchmarks/run.py measures (the choice and why are printed and saved in "
                       "metrics.json) (default: auto)")
    train.add_argument("--devices", default="1", metavar="all|N",
                       help="train data-parallel on N devices (GPUs, else CPU devices) or all of them, "
                       "through Keras' distribution support (jax, tensorflow); the batch size is the "
                       "global one (default: 1)")
    _add_data_dir_option(train)
    train.set_defaults(handler=_run_train)

    evaluate = subcommands.add_parser("evaluate", help="test accuracy of a trained model, per class too")
    evaluate.add_argument("model", metavar="MODEL", help="a model.keras written by `resnet-course train`")
    evaluate.add_argument("--dataset", required=True, choices=datasets)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--flip-tta", action="store_true",
                          help="average each image's and its mirror's probabilities (cifar10, fer2013)")
    _add_data_dir_option(evaluate)
    evaluate.set_defaults(handler=_run_evaluate)

    predict = subcommands.add_parser("predict", help="the top classes of images, with probabilities")
    predict.add_argument("model", metavar="MODEL", help="a model.keras written by `resnet-course train`")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files (png, jpg, ...)")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default: 3)")
    predict.set_defaults(handler=_run_predict)


def _run_check(args: argparse.Namespace) -> int:
    from resnet_course.grading import check_resnet50
    from resnet_course.model import ResNet50

    # The grader raises (AssertionError with its diagnosis) when the reference is wrong; that is
    # a bug in the course, not a user error, so its traceback is shown.
    check_resnet50(ResNet50)
    if args.summary:
        ResNet50().summary(line_length=110)
    return 0


def _add_check_parser(subcommands: argparse._SubParsersAction) -> None:
    check = subcommands.add_parser(
        "check", help="grade the course's reference ResNet-50 with the course's grader",
        description="Grade the reference ResNet-50 (resnet_course.model.ResNet50) with "
        "check_resnet50, as a student's is graded; prints a line per case, then 'All tests passed.'.",
    )
    check.add_argument("--summary", action="store_true", help="also print the model's summary")
    check.set_defaults(handler=_run_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-course",
        description="ResNet-50 in Keras 3: the course's command line.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_parser(subcommands)
    _add_training_parsers(subcommands)
    _add_check_parser(subcommands)
    add_grade_parser(subcommands)
    return parser


#: Commands that load Keras (and TensorFlow on its backend); the data commands don't.
_KERAS_COMMANDS = ("train", "evaluate", "predict", "check", "grade")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and "keras" not in sys.modules:
            from resnet_course.backends import use_backend

            use_backend(args.backend)  # before Keras is imported: the backend is fixed then
        if args.command in _KERAS_COMMANDS:
            from resnet_course import startup

            startup.import_tensorflow_quietly()  # no C++ start-up lines before the command's own output
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
