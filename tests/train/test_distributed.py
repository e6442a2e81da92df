"""`wsi train` under torchrun: two CPU processes (gloo, loopback only) against one, on planted-signal bags."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.bags import SyntheticSlide, make_cohort
from wsi_pipeline.train.process import ProcessRole

WSI = Path(sys.executable).parent / "wsi"
SPLITS = ["train"] * 15 + ["val"] * 7 + ["test"] * 5  # uneven: padded steps, unequal val shares
# One model per fold: the members' own run under torchrun is the last test.
TRAIN_OPTIONS = ["--model", "abmil", "--members", "1", "--epochs", "4", "--lr", "5e-4", "--device", "cpu"]
TRAIN_OPTIONS += ["--seed", "0"]


def test_every_rank_takes_as_many_steps_and_the_order_is_covered() -> None:
    order = list(range(7))
    shares = [ProcessRole(rank, 3).my_bags(order) for rank in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(b for s in shares for b in s) == sorted(
        [*order, 0, 1]
    )  # padded with the first bags of the order
    assert ProcessRole().my_bags(order) == order
    scoring = [ProcessRole(rank, 3).my_share(order[:2]) for rank in range(3)]
    assert scoring == [[0], [1], []]


# One step through DistributedDataParallel and a gather, as a fold does, then the group is left. The cycle
# collector runs only when leaving asks for it, so the check does not hang on when Python happens to run it.
# Each rank writes its thread counts to its own file: lines printed by two processes can interleave.
LEAVE_GROUP = """
import gc, os, sys, torch
from pathlib import Path
from wsi_pipeline.train.process import torchrun_process

gc.disable()

def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))

def one_step(role, device) -> None:
    net = role.wrap(torch.nn.Linear(4, 2), device)
    net(torch.randn(3, 4)).sum().backward()
    role.gather(role.rank)

before = native_threads()
with torchrun_process(torch.device("cpu")) as (role, device):
    one_step(role, device)
    during = native_threads()
Path(sys.argv[1], f"rank{role.rank}.txt").write_text(f"{before} {during} {native_threads()}")
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_leaving_the_group_ends_its_worker_threads(tmp_path: Path) -> None:
    """The worker threads gloo started must end when a rank leaves its group, not at interpreter shutdown:
    one still freeing the last gather's tensors there aborted the rank after a finished run."""
    script = tmp_path / "leave_group.py"
    script.write_text(LEAVE_GROUP)
    done = subprocess.run(
        [*_torchrun(2), str(script), str(tmp_path)], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        before, during, after = map(int, (tmp_path / f"rank{rank}.txt").read_text().split())
        assert during > before and after == before, (rank, before, during, after)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cohort(root: Path) -> list[SyntheticSlide]:
    slides = make_cohort(root / "features", len(SPLITS), planted_fraction=0.2, tiles=(150, 300), dim=64)
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "label", "split"])
        writer.writerows([s.slide_id, s.label, split] for s, split in zip(slides, SPLITS, strict=True))
    return slides


def _train(root: Path, out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["train", "--features", str(root / "features"), "--labels", str(root / "labels.csv")]
    args += ["--out", str(out), *TRAIN_OPTIONS, *extra]
    launcher = _torchrun(nproc) if nproc > 1 else []
    return subprocess.run(
        [*launcher, str(WSI), *args], capture_output=True, text=True, env=_env(), timeout=300
    )


def _torchrun(nproc: int) -> list[str]:
    """The launcher for `nproc` CPU processes on this machine."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node"]
    return [*launcher, str(nproc), "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]


def _env() -> dict[str, str]:
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def _result(out: Path) -> dict[str, float]:
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_rank_0_writes(tmp_path: Path) -> None:
    _cohort(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    single = _train(tmp_path, one, 1)
    assert single.returncode == 0, single.stderr
    double = _train(tmp_path, two, 2)
    assert double.returncode == 0, double.stderr

    # Rank 0 alone wrote: the same files as one process, every history row once, one progress report.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(tmp_path.glob("two*/**/*.tmp*"))
    with open(two / "history.csv", newline="") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["1", "2", "3", "4"]
    assert double.stderr.count("epoch 1/4") == 1 and double.stdout.count("best val AUROC") == 1

    a, b = _result(one)["best_val_auroc"], _result(two)["best_val_auroc"]
    assert abs(a - b) <= 0.05 or min(a, b) >= 0.95, (a, b)
    assert b >= 0.9  # the planted signal is learnt with gradients averaged across the two ranks

    payload = torch.load(two / "checkpoint.pt", weights_only=True)
    assert payload["model_name"] == "abmil" and not any(
        k.startswith("module.") for k in payload["state_dict"]
    )
    evaluated = CliRunner().invoke(app, ["eval", "--run", str(two), "--split", "val", "--no-heatmaps"])
    assert evaluated.exit_code == 0, evaluated.output
    # The checkpoint scores the validation bags as the gathered predictions of the best epoch did.
    metrics = json.loads((two / "eval-val" / "metrics.json").read_text())
    assert metrics["n_slides"] == 7 and metrics["auroc"] == pytest.approx(b, abs=1e-6)

    # --resume under torchrun: both ranks find the finished run and leave it as it is.
    resumed = _train(tmp_path, two, 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _result(two)["best_val_auroc"] == b


@pytest.mark.slow
def test_members_under_torchrun_train_like_one_process_and_load_as_one_model(tmp_path: Path) -> None:
    _cohort(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    options = ("--members", "2", "--epochs", "2")  # later options win
    for out, nproc in ((one, 1), (two, 2)):
        done = _train(tmp_path, out, nproc, *options)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert (two / "members.csv").read_text() == (one / "members.csv").read_text()
    for member in ("member_0", "member_1"):
        with open(two / member / "history.csv", newline="") as fh:
            assert [row["epoch"] for row in csv.DictReader(fh)] == ["1", "2"]
    payload = torch.load(two / "checkpoint.pt", weights_only=True)
    assert payload["members"] == 2 and {k.split(".")[1] for k in payload["state_dict"]} == {"0", "1"}
    a, b = _result(one), _result(two)
    assert a["members"] == b["members"] == 2
    auroc_one, auroc_two = a["best_val_auroc"], b["best_val_auroc"]
    assert abs(auroc_one - auroc_two) <= 0.05 or min(auroc_one, auroc_two) >= 0.95, (auroc_one, auroc_two)
