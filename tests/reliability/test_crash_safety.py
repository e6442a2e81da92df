"""SIGKILL at random moments, then the same command again: the result must be the uninterrupted run's.

For each stage, one uninterrupted run is the reference (its duration T measured). Then, in chains on fresh
output folders: the command is started and its whole process group killed at a moment drawn uniformly from
[0, T) (seeded); the same command is started again and may be killed again the same way (at most
`CHAIN` kills in a row, so kills land in fresh runs and in runs resuming from a kill); the chain ends with
the command running to its end. The checks:

1. at every kill, each output under its final name is complete: for tile and extract it equals the
   reference's; for train it loads, and its history is a prefix of the reference's;
2. the run that ends a chain exits 0, leaves no temporary or moved-aside folder, and its outputs equal the
   reference's by content (tests/reliability/outputs.py; the exclusions are in conftest.py);
3. every complete output that existed at a kill still exists at the end (the resume state `last.pt` of
   train excepted: it is deleted by design once its fold ends).

`WSI_KILLS` sets the kills per stage (default 5; `WSI_KILLS=20` is the long version, docs/RELIABILITY.md).
When a fresh run ends before its kill moment, later moments are drawn below that run's duration, so every
stage really takes `WSI_KILLS` kills.
"""

import csv
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.conftest import TRAIN_EXCLUSIONS, Reference
from tests.reliability.outputs import (
    NONE,
    Exclusions,
    describe_difference,
    file_content,
    leftovers,
    listing,
    tree_content,
    visible,
)
from tests.reliability.process import run_until_killed, run_wsi

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("WSI_KILLS", "5"))
CHAIN = 2  # kills in a row before a run may finish
SEED = 7


def check_equal_to_reference(
    out: Path, reference: Reference, paths: set[str], exclusions: Exclusions
) -> None:
    for path in sorted(visible(paths)):
        assert file_content(out / path, exclusions) == reference.content[path], (
            f"{path} incomplete after the kill"
        )


def check_train_outputs(out: Path, reference: Reference, paths: set[str], exclusions: Exclusions) -> None:
    """A killed training run's files are whole: they load, and they describe the epochs it finished."""
    from wsi_pipeline.stores.run_folder import load_checkpoint

    for path in sorted(visible(paths)):
        name = Path(path).name
        if name == "checkpoint.pt":
            assert load_checkpoint(out / path).epoch >= 1
        elif name == "last.pt":
            assert "model" in file_content(out / path)["torch"]
        elif name == "history.csv":
            rows = file_content(out / path, exclusions)["csv"]
            assert rows and rows == reference.content[path]["csv"][: len(rows)], "history is not a prefix"
        else:
            assert file_content(out / path, exclusions) == reference.content[path], f"{path} differs"


STAGES: dict[str, tuple[str, Exclusions, Callable[..., None]]] = {
    "tile": ("tile_reference", NONE, check_equal_to_reference),
    "extract": ("extract_reference", NONE, check_equal_to_reference),
    "train": ("train_reference", TRAIN_EXCLUSIONS, check_train_outputs),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_runs_resume_to_the_uninterrupted_result(
    stage: str, request: pytest.FixtureRequest, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    fixture, exclusions, check_at_kill = STAGES[stage]
    reference: Reference = request.getfixturevalue(fixture)
    rng = random.Random(f"{SEED}-{stage}")
    horizon = reference.seconds
    moments: list[float] = []
    runs = 0
    for chain in range(3 * KILLS):
        if len(moments) >= KILLS:
            break
        out = tmp_path / f"chain{chain}" / "out"
        at_kills: set[str] = set()
        chain_moments: list[float] = []
        for link in range(CHAIN + 1):
            runs += 1
            log = tmp_path / f"chain{chain}-run{link}.log"
            if link == CHAIN or len(moments) >= KILLS:
                ended = run_wsi(reference.command(out))
                code, story = ended.returncode, str(ended)
            else:
                after_s = rng.uniform(0, horizon)
                run = run_until_killed(reference.command(out), after_s, out, log)
                if run.killed:
                    moments.append(after_s)
                    chain_moments.append(round(after_s, 2))
                    check_at_kill(out, reference, run.outputs_at_kill, exclusions)
                    at_kills |= visible(run.outputs_at_kill) - _transient(run.outputs_at_kill, exclusions)
                    continue
                if link == 0:
                    horizon = after_s  # faster than the reference: draw earlier moments from now on
                code, story = run.returncode, log.read_text()
            where = f"chain {chain} (kills at {chain_moments} s)"
            assert code == 0, f"{where}: the run after the kills failed:\n{story}"
            assert leftovers(out) == [], f"{where}: temporaries left"
            actual = tree_content(out, exclusions)
            assert actual == reference.content, (
                f"{where}: outputs differ from the uninterrupted run's\n"
                + describe_difference(reference.content, actual)
            )
            lost = at_kills - listing(out)
            assert not lost, f"{where}: complete outputs present at a kill were removed: {sorted(lost)}"
            break
    assert len(moments) == KILLS, f"only {len(moments)} of {KILLS} runs were still going at their kill moment"
    record_property("kills", len(moments))
    record_property("runs", runs)
    print(
        f"{stage}: {len(moments)} kills in {runs} runs, at {sorted(round(m, 2) for m in moments)} s "
        f"of T={reference.seconds:.1f} s"
    )


def _transient(paths: set[str], exclusions: Exclusions) -> set[str]:
    return {p for p in paths if Path(p).name in exclusions.files}


def test_history_prefix_check_can_fail(tmp_path: Path, train_reference: Reference) -> None:
    """The train check at a kill is not vacuous: a history that disagrees with the reference is caught."""
    history = tmp_path / "history.csv"
    rows = train_reference.content["history.csv"]["csv"]
    with open(history, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0].keys(), "seconds"])
        writer.writeheader()
        writer.writerow({**rows[0], "val_auroc": "0.123", "seconds": "1"})
    with pytest.raises(AssertionError, match="prefix"):
        check_train_outputs(tmp_path, train_reference, {"history.csv"}, TRAIN_EXCLUSIONS)
