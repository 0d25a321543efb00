"""Flags of a test build that measures little: a few samples, no warm-up time, no progress bar, none of the
per-build extras (end-to-end proof, boundary, drift correction, short keys measured again, speed probe) unless a
test turns one back on.

Tests that check the machinery (resume, merge, executors, crash safety) use it; tests of a default build
leave it out on purpose.
"""

from __future__ import annotations


def quick_flags(repeats: int = 5, *extra: str, speed_probe: bool = False) -> list[str]:
    """The ``profiler.build`` flags of a quick test build with ``repeats`` samples per key, then ``extra``
    (``speed_probe``: keep the machine-speed probe of a build without drift correction)."""
    return [
        "--repeats",
        str(repeats),
        "--warmup",
        "1",
        "--warmup-ms",
        "0",
        "--no-progress",
        "--no-validate",
        "--boundary",
        "none",
        "--no-drift-correct",
        "--short-rounds",
        "1",
        *(() if speed_probe else ("--no-speed-probe",)),
        *extra,
    ]
