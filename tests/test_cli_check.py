"""`resnet-course check`: the reference ResNet-50 graded with the course's grader (make quickstart's first step)."""

from __future__ import annotations

import pytest

from resnet_course import cli


@pytest.mark.slow  # builds and grades ResNet-50 on the grader's cases
def test_check_grades_the_reference(capsys):
    assert cli.main(["check"]) == 0
    assert capsys.readouterr().out.strip().endswith("All tests passed.")


def test_check_is_a_subcommand():
    args = cli.build_parser().parse_args(["check", "--summary"])
    assert args.command == "check" and args.summary
