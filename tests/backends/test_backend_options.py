"""`--backend` / `--address` / `--gpus-per-task` mistakes, Ray missing, and the resource arithmetic
(no Ray is started here)."""

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from wsi_pipeline.backends import Backend, cpus_per_gpu_slot, import_ray, parse_backend
from wsi_pipeline.errors import WsiError


def wsi(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("name", "address", "gpus", "message"),
    [
        ("spark", None, None, "--backend 'spark': choose local or ray"),
        ("local", "10.0.0.1:6379", None, "--address is the Ray cluster to use: it needs --backend ray"),
        ("local", None, 0.5, "--gpus-per-task is what each Ray task reserves: it needs --backend ray"),
        ("ray", None, 2.0, "--gpus-per-task 2: expected a fraction in (0, 1]"),
    ],
)
def test_option_mistakes_are_one_line(
    name: str, address: str | None, gpus: float | None, message: str
) -> None:
    with pytest.raises(WsiError) as error:
        parse_backend(name, address, gpus_per_task=gpus)
    assert str(error.value) == message


def test_defaults_and_a_valid_ray_backend() -> None:
    assert parse_backend("local", None) == Backend()
    ray = parse_backend("ray", "auto", local_cpus=4, gpus_per_task=0.25)
    assert ray == Backend("ray", "auto", 4, 0.25) and ray.is_ray


def test_ray_missing_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the cluster extra
    with pytest.raises(WsiError) as error:
        import_ray()
    assert "'cluster' extra" in str(error.value) and "uv sync --extra cluster" in str(error.value)


def test_commands_refuse_before_writing(cmu_slide: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    result = wsi("tile", cmu_slide, "--out", out, "--address", "10.0.0.1:6379")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --address is the Ray cluster to use: it needs --backend ray"
    monkeypatch.setitem(sys.modules, "ray", None)
    for command in (["tile", cmu_slide], ["extract", tmp_path, "--random-init"]):
        result = wsi(*command, "--out", out, "--backend", "ray")
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: --backend ray needs Ray") and "pip install 'wsi[cluster]'" in line
    assert not out.exists()


def test_cpus_per_gpu_slot_is_the_smallest_share() -> None:
    nodes = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 16.0, "GPU": 1.0}, {"CPU": 32.0}]
    assert cpus_per_gpu_slot(nodes, 1.0) == 8  # 64 CPUs over 8 GPUs on the first node
    assert cpus_per_gpu_slot(nodes, 0.5) == 4  # two tasks per GPU there
    assert cpus_per_gpu_slot([{"CPU": 8.0}], 1.0) == 1  # no GPU node: the caller refuses anyway
