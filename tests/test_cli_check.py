"""`resnet-course check`: the reference ResNet-50 graded with the course's grader (make quickstart's first step)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from resnet_course import cli


@pytest.mark.slow  # starts Python and TensorFlow, then builds and grades ResNet-50 on the grader's cases
def test_check_grades_the_reference_quietly():
    done = subprocess.run([sys.executable, "-m", "resnet_course", "check"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "case 1 of 2 passed: ResNet50(input_shape=(64, 64, 3), classes=6)",
        "case 2 of 2 passed: ResNet50(input_shape=(96, 64, 1), classes=3)",
        "All tests passed.",
    ]
    # TensorFlow's C++ start-up lines are left out (resnet_course.startup); nothing else is hidden.
    assert "absl::InitializeLog" not in done.stderr and "cudart_stub" not in done.stderr, done.stderr


def test_check_is_a_subcommand():
    args = cli.build_parser().parse_args(["check", "--summary"])
    assert args.command == "check" and args.summary
