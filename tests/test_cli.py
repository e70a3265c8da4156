"""The `sarssl` command line: --help everywhere, a working simulate/stats round, one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sarssl.cli import build_parser, main

SUBCOMMANDS = [["simulate"], ["stats"], ["book"], ["pretrain"], ["pretrain", "mae"], ["pretrain", "dino"], ["finetune"],
               ["sweep"], ["data"], ["data", "download"]]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarssl.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sarssl" in capsys.readouterr().out


def test_simulate_then_stats(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "data"), "--n-chips", "12", "--size", "16", "--seed", "3", "--quiet"]) == 0
    assert (tmp_path / "data" / "sim-a").is_dir()
    assert main(["stats", str(tmp_path / "data"), "--n-tiles", "4"]) == 0
    out = capsys.readouterr().out
    assert "s1grd-2020" in out and "vv_summer" in out and "train" in out


@pytest.mark.parametrize("args, expected", [
    (["simulate", "OUT", "--n-chips", "-3"], "expected a positive integer"),
    (["simulate", "OUT", "--size", "abc"], "expected a positive integer"),
    (["stats", "/no/such/folder"], "does not exist"),
    (["pretrain", "mae", "--data", "/no/such/folder", "--out", "run"], "does not exist"),
    (["pretrain", "byol", "--data", ".", "--out", "run"], "invalid choice"),
    (["stats", "EMPTY"], "no AOI"),
])
def test_user_errors_are_one_line(args, expected, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [a.replace("OUT", str(tmp_path / "o")).replace("EMPTY", str(tmp_path / "empty")) for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
