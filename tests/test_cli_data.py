"""Tests for `resnet-course data fetch|info` (resnet_course.cli)."""

from __future__ import annotations

import runpy
import sys

import pytest

from resnet_course import cli
# The fixtures (isolated: private cache and no network; file_server) and data makers are
# shared with the datasets tests.
from test_datasets import (  # noqa: F401
    file_server,
    isolated,
    make_cifar_batches,
    make_signs,
    serve_signs,
)


def test_info_prints_form_shapes_counts_and_cache(tmp_path, capsys):
    make_signs(tmp_path / "signs")
    make_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    assert cli.main(["data", "info", "signs", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"SIGNS (signs): HDF5 files at {tmp_path / 'signs'}" in out
    assert "train  x (12, 64, 64, 3) uint8, y (12,) int64; per class: 2 2 2 2 2 2" in out
    assert "cache: none" in out
    assert cli.main(["data", "info", "cifar10", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "official pickled batches" in out and "test   x (4, 32, 32, 3) uint8" in out
    assert f"cache: {tmp_path / 'cache'}" in out


def test_info_all_reports_each_dataset_and_fails_for_the_missing(tmp_path, capsys):
    make_signs(tmp_path / "signs")
    assert cli.main(["data", "info", "all", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "SIGNS (signs)" in captured.out
    assert "error: CIFAR-10 not found" in captured.err and "error: FER-2013 not found" in captured.err
    assert "Traceback" not in captured.err


def test_info_never_downloads(tmp_path, file_server, monkeypatch, capsys):
    served, base = file_server
    serve_signs(served, base, monkeypatch)
    assert cli.main(["data", "info", "signs", "--data-dir", str(tmp_path)]) == 2
    assert not (tmp_path / "signs").exists()


def test_fetch_downloads_then_summarises(tmp_path, file_server, monkeypatch, capsys):
    served, base = file_server
    serve_signs(served, base, monkeypatch)
    assert cli.main(["data", "fetch", "signs", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "signs" / "train_signs.h5").is_file()
    assert "test   x (6, 64, 64, 3) uint8" in capsys.readouterr().out


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "info", "mnist"])
    assert exit_info.value.code == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli_and_exits_2_without_a_traceback(tmp_path, monkeypatch, capsys):
    # In-process (runpy) rather than a subprocess, which would pay for importing TensorFlow.
    monkeypatch.setattr(sys, "argv", ["resnet_course", "data", "info", "fer2013", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("resnet_course", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: FER-2013 not found" in err and "kaggle.com" in err and "Traceback" not in err
