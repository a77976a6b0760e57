"""Shared pieces of the benchmark scripts: arguments, waiting for a quiet machine, interleaved timing, peak
memory, and the ``results/<name>.json`` files that ``report.py`` turns into ``RESULTS.md``.

Every script times the things it compares side by side in one process: each round runs every candidate
once, in a rotated order, and the reported figure is the median over rounds. Ratios are therefore taken
between runs that shared the same machine state, which matters on a small shared machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
# Timing-sensitive jobs of the project that a benchmark must not run beside.
BUSY_PATTERN = "hf-projections sweep"


# --------------------------------------------------------------------------- arguments and setup


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes that run in seconds (smoke tests)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="folder of the <name>.json result files")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of BEIR sets (default: $HF_PROJECTIONS_DATA, else ../shared/data)")
    parser.add_argument("--backbone", default=None, help="encoder name or folder (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-wait", action="store_true", help=f"do not wait for running '{BUSY_PATTERN}' jobs")
    parser.add_argument("--max-wait", type=float, default=25 * 60, help="seconds to wait for a quiet machine")
    return parser


def add_backbone_precision(parser: argparse.ArgumentParser, cache_note: str) -> None:
    """``--backbone-precision``: the frozen backbone pass that fills a sweep's feature cache (``cache_note`` says
    which cache)."""
    from hf_projections.training.backbone_precision import BACKBONE_PRECISIONS

    parser.add_argument("--backbone-precision", choices=BACKBONE_PRECISIONS, default=None,
                        help="the frozen backbone pass that fills the cache (default: the presets', fp32; auto: bf16 "
                             f"where the hardware runs it natively); {cache_note}")


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Point the data loader at the data, set threads, wait for a quiet machine; returns run notes."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = resolve_data_root(args.data_dir)
    if root is not None:
        os.environ["HF_PROJECTIONS_DATA"] = str(root)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    waited = 0.0
    if not (args.quick or args.no_wait):
        waited = wait_for_quiet_machine(max_wait_s=args.max_wait)
    return {"data_root": str(root) if root else None, "waited_for_quiet_machine_s": round(waited, 1),
            "busy_at_start": busy_processes()}


def resolve_data_root(path: Path | None) -> Path | None:
    """``path``, else ``$HF_PROJECTIONS_DATA``, else ``<repo>/../shared/data`` when it exists."""
    if path is not None:
        return Path(path)
    value = os.environ.get("HF_PROJECTIONS_DATA")
    if value:
        return Path(value)
    shared = REPO_DIR.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def quiet_transformers() -> None:
    """No load reports or progress bars in benchmark output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# --------------------------------------------------------------------------- a quiet machine


def busy_processes(pattern: str = BUSY_PATTERN) -> list[str]:
    """Command lines of running processes matching ``pattern`` (this process excluded)."""
    try:
        found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:  # no pgrep: cannot tell, assume quiet
        return []
    own = {str(os.getpid()), str(os.getppid())}
    return [line for line in found.splitlines()
            if line.split(" ", 1)[0] not in own and not _is_stopped(line.split(" ", 1)[0])]


def _is_stopped(pid: str) -> bool:
    """True for a process paused with SIGSTOP (state ``T``): it uses no CPU, so it does not make the machine busy."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")


def wait_for_quiet_machine(pattern: str = BUSY_PATTERN, max_wait_s: float = 1500, poll_s: float = 60) -> float:
    """Sleep while ``pattern`` jobs run (at most ``max_wait_s``); returns the seconds waited."""
    started = time.monotonic()
    while busy := busy_processes(pattern):
        waited = time.monotonic() - started
        if waited >= max_wait_s:
            print(f"[bench] still busy after {waited:.0f} s, measuring anyway: {busy}", file=sys.stderr)
            break
        print(f"[bench] waiting for {len(busy)} '{pattern}' job(s) to finish ({waited:.0f} s so far)", file=sys.stderr)
        time.sleep(poll_s)
    return time.monotonic() - started


# --------------------------------------------------------------------------- timing


def interleaved_timings(
    candidates: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    on_result: Callable[[str, int, Any], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each candidate per round; every round runs all candidates once, in a rotated order.

    ``warmup`` untimed rounds run first. ``on_result(name, round, value)`` sees each timed call's return value.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            value = candidates[name]()
            timings[name].append(time.perf_counter() - started)
            if on_result is not None:
                on_result(name, round_number, value)
    return timings


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio_median(values: list[float], baseline: list[float]) -> float:
    """Median over rounds of ``values[r] / baseline[r]`` (both measured in the same round)."""
    return median([value / base for value, base in zip(values, baseline)])


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of seconds."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakRSS:
    """Peak resident memory added while the ``with`` block runs, in bytes (``.peak_bytes``).

    Linux: the kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` before the
    block and read after it, so every allocation counts, torch's and numpy's included (``tracemalloc``
    would only see Python objects). Elsewhere a thread samples ``psutil`` RSS every millisecond.
    ``method`` says which one ran.
    """

    def __init__(self):
        self.peak_bytes = 0
        self.method = "none"

    def __enter__(self) -> PeakRSS:
        self._before = _status_kib("VmRSS")
        self._sampler = None
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "linux VmHWM reset via /proc/self/clear_refs (peak RSS - RSS before)"
        except OSError:
            import psutil

            process = psutil.Process()
            self._before_bytes = process.memory_info().rss
            self._stop = threading.Event()
            self._peak = self._before_bytes

            def sample():
                while not self._stop.is_set():
                    self._peak = max(self._peak, process.memory_info().rss)
                    time.sleep(0.001)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
            self.method = "psutil RSS sampled every 1 ms (peak - RSS before)"
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = max(0, self._peak - self._before_bytes)
        else:
            peak = _status_kib("VmHWM")
            self.peak_bytes = max(0, (peak - self._before) * 1024) if peak is not None and self._before else 0


def available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


# --------------------------------------------------------------------------- results


def versions() -> dict[str, str | None]:
    """Versions of the packages the numbers depend on."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "sentence-transformers", "safetensors", "voyager", "hf-projections"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def write_section(name: str, payload: dict[str, Any], output_dir: Path) -> Path:
    """Write ``<output_dir>/<name>.json`` atomically: ``payload`` plus machine, versions and a timestamp."""
    from hf_projections.evaluation import machine_info
    from hf_projections.atomic import atomic_write_json

    document = {
        "benchmark": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else name,
        "machine": machine_info(),
        "versions": versions(),
        **payload,
    }
    path = Path(output_dir) / f"{name}.json"
    atomic_write_json(path, document)
    print(f"[bench] wrote {path}")
    return path


def status(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
