"""The machine a benchmark ran on, and whether it was quiet: one rule, used by every bench_*.py.

Timing figures taken while other work runs measure the other work. So every benchmark samples the 1-minute
load average before it starts and after it ends, and the rule is:

    quiet  <=>  load_before <= 0.5 * cores   and   load_after <= 0.5 * cores + own_threads

(`own_threads`: the threads the benchmark itself keeps busy, which the 1-minute average still counts when
it ends). A busy machine makes the benchmark stop before measuring, or refuse to write its result, unless
`--allow-busy` is given; then the result is written with ``"busy": true`` in its JSON and a bold
"BUSY MACHINE" line in its Markdown, so a busy figure is never filed as a quiet one. Benchmarks that
measure no time (accuracy, AUROC) record the load the same way but never refuse (`timing=False`).

    guard = LoadGuard(threads=1, allow_busy=args.allow_busy)   # checks the load before
    ... measure ...
    record = guard.finish()          # checks the load after; exits non-zero when busy and not allowed
    result["machine"] = {**describe_machine(), **record}
    text = busy_banner(record) + text
"""

import argparse
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

QUIET_SHARE = 0.5  # of the cores, that other work may keep busy


def add_busy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help="measure and record even on a busy machine; the result is labelled busy (benchmarks/_machine.py)",
    )


def proc_kib(key: str, pid: int | str = "self", file: str = "status") -> int:
    """The `key: N kB` line of /proc/<pid>/<file> in KiB (VmRSS, VmHWM; with `pid=""`, `file="meminfo"`:
    MemAvailable), 0 when the line is absent. Linux only, like the memory figures that use it."""
    path = f"/proc/{pid}/{file}" if pid != "" else f"/proc/{file}"
    with open(path) as lines:
        for line in lines:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


def load_1min() -> float:
    return os.getloadavg()[0]


def describe_machine() -> dict[str, Any]:
    """Host, CPU count, memory, torch and GPU, as plain JSON values."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
    }
    try:
        import torch  # heavy optional dependency: only for its version and the GPU name

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a project dependency
        pass
    return info


@dataclass
class LoadGuard:
    """Samples the load before (now) and after (`finish`) a measurement and applies the module's rule."""

    threads: int
    allow_busy: bool = False
    timing: bool = True
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_before: float = field(default_factory=lambda: load_1min())

    def __post_init__(self) -> None:
        limit = QUIET_SHARE * self.cores
        if self.load_before > limit:
            self._refuse(f"load {self.load_before:.2f} > {limit:.1f} before starting")

    def _refuse(self, why: str) -> None:
        message = f"busy machine ({why}; rule in benchmarks/_machine.py)"
        if self.timing and not self.allow_busy:
            sys.exit(f"{message}: not measuring. Wait for a quiet machine or pass --allow-busy.")
        print(f"warning: {message}; the result is labelled busy", file=sys.stderr)

    def finish(self) -> dict[str, Any]:
        """The load record to store with the result; exits (status 3) when busy, timing and not allowed."""
        after = load_1min()
        before_limit = QUIET_SHARE * self.cores
        after_limit = before_limit + self.threads
        busy = self.load_before > before_limit or after > after_limit
        if after > after_limit:  # (busy before was already refused or allowed in __post_init__)
            self._refuse(f"load {after:.2f} > {after_limit:.1f} at the end")
        return {
            "load_before": round(self.load_before, 2),
            "load_after": round(after, 2),
            "cores": self.cores,
            "own_threads": self.threads,
            "busy": busy,
            "busy_rule": f"load_before <= {before_limit:g} and load_after <= {after_limit:g} (1-min load)",
        }


def busy_banner(record: dict[str, Any]) -> str:
    """Markdown first line(s) stating the load; a bold warning when the machine was busy."""
    load = f"1-min load {record['load_before']} before, {record['load_after']} after, {record['cores']} cores"
    if record["busy"]:
        return f"**BUSY MACHINE** ({load}; rule {record['busy_rule']}): timings are not quiet-machine figures.\n\n"
    return f"Quiet machine ({load}).\n\n"
