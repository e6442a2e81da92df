"""`--threads` on every stage: one option, one default (the physical cores), and a library call that leaves
the caller's torch setting as it found it."""

import re

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from wsi_pipeline.devices import default_threads, torch_threads


def test_torch_threads_sets_the_count_inside_and_restores_it_after() -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted) as chosen:
        assert chosen == wanted and torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with torch_threads(None) as chosen:
        assert chosen == default_threads() == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1 if before != 1 else 2):
        raise RuntimeError("a slide failed")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("stage", ["tile", "extract", "train", "eval", "predict"])
def test_every_stage_takes_threads(stage: str) -> None:
    result = CliRunner().invoke(app, [stage, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"--threads\b", result.output), f"wsi {stage} has no --threads"


@pytest.mark.parametrize("stage", ["extract", "eval"])
def test_threads_reach_the_resolved_config(stage: str, tmp_path) -> None:
    args = [stage, "--threads", "3", "--print-config"]
    args += ["--run", str(tmp_path)] if stage == "eval" else []
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert re.search(r"^threads: 3$", result.output, re.MULTILINE), result.output
