"""Sessions: tests, lint, demo (the main job on the CPU), bench (benchmarks/), gpu_check (the GPU check).

torch is pinned by constraints-cpu.txt so that no session ever pulls a CUDA build.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("NOX_PYTHON", "3.11")
CONSTRAINTS = ("-c", "constraints-cpu.txt")


def _install(session: nox.Session, extras: str) -> None:
    # torch first, pinned, so that the extras' "torch>=" is already satisfied.
    session.install(*CONSTRAINTS, "torch==2.13.0")
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on the CPU, Ray included (GPU and TensorRT tests skip where absent)."""
    _install(session, "dev,ray")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on the CPU default: fp32 and int8 tables of the reference networks' keys."""
    _install(session, "cpu,reports")
    out = session.posargs or ["--out", "out/tables"]
    session.run("python", "-m", "profiler.build", "--device", "cpu", "--batch", "1", *out)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks under benchmarks/ (results go to BENCHMARKS.md by hand, with device and date)."""
    _install(session, "dev")
    for script in sorted(os.listdir("benchmarks")):
        if script.startswith("bench_") and script.endswith(".py"):
            session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session(python=PYTHON)
def gpu_check(session: nox.Session) -> None:
    """The prepared GPU check (benchmarks/gpu_check.sh); without a CUDA GPU every section reports skipped."""
    _install(session, "dev")
    session.run("bash", "benchmarks/gpu_check.sh", *(session.posargs or ["out/gpu_check"]), external=True)
