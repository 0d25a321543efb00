"""``python -m profiler.merge``: join shards, tables and part folders into one latency table.

Examples::

    python -m profiler.merge out/a100_tensorrt_fp16_b64.shard-*-of-8.parquet --out a100_tensorrt_fp16_b64.parquet
    python -m profiler.merge old.parquet new.parquet run2/cpu_onnxruntime_fp32_b1.parquet.parts --out merged.parquet

Inputs are table files, or folders of parts (``<table>.parquet.parts/``) left by
a build that did not finish. They must have been measured with the same
settings -- every setting that changes a number (:mod:`tables.settings`): device
and its model, backend and every backend setting (threads, pinning, provider,
builder options, ...), engine and version, precision, batch, timing protocol,
rounds, opset, drift reference graph. Otherwise the merge is refused in one line
naming each differing setting with both values; ``--force`` merges anyway, and
then every row keeps the fingerprint of the settings it was measured with
(column ``settings_id``; metadata ``settings_by_id`` and ``merge_forced``), so
the mix stays visible in the table. Tables built with ``--drift-correct`` each
brought their keys to their own reference speed, so the rows of every other
input are brought to the first input's (latency x first reference / its
reference), and the merge says so. Every input is read with the table reader's
row checks: a NaN, infinite or negative "ok" row refuses the input.

A key found more than once keeps one row: an ok row beats a failed one; among ok
rows the one with the lower coefficient of variation (cv) wins; among failed rows
the newest. Duplicates whose trimmed means differ by more than the noise
(relative difference > max(3 x combined cv, 5%)) are conflicts: each is
reported (the first 10 in full) with the row kept and why.

Exit status: 0 merged, 2 bad input or refused, 1 unexpected error.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tables.cli import CliParser, run_cli, text_arg
from tables.schema import STATUS_OK, empty_frame, read_table, utc_now, write_table
from tables.settings import describe, differences, settings_id, table_settings
from tables.store import dedup_rows

#: Conflicts printed in full; the rest are counted.
MAX_CONFLICT_LINES = 10

#: Smallest relative difference between two ok rows of one key that counts as a conflict.
MIN_CONFLICT_REL = 0.05


class MergeRefused(ValueError):
    """Inputs that describe different tables (without --force), or unusable inputs."""


@dataclass
class Source:
    """One input: a table file or a folder of parts."""

    label: str
    frame: pd.DataFrame
    metadata: dict[str, Any]


@dataclass
class Conflict:
    """Two ok rows of one key whose trimmed means differ beyond their noise."""

    key: str
    kept_ms: float
    kept_cv: float
    kept_from: str
    other_ms: float
    other_cv: float
    other_from: str
    rel_diff: float
    tolerance: float
    reason: str

    def line(self) -> str:
        return (
            f"conflict {self.key}: kept {self.kept_ms:.4g} ms (cv {self.kept_cv:.1%}, {self.kept_from}) over "
            f"{self.other_ms:.4g} ms (cv {self.other_cv:.1%}, {self.other_from}): {self.rel_diff:.1%} apart, "
            f"more than the {self.tolerance:.1%} noise; kept because {self.reason}"
        )


@dataclass
class MergeReport:
    """What a merge did."""

    inputs: int = 0
    rows_in: int = 0
    keys: int = 0
    failed: int = 0
    duplicated_keys: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why the kept row won, per duplicated key
    conflicts: list[Conflict] = field(default_factory=list)
    rescaled: list[str] = field(default_factory=list)  # inputs brought to the first input's reference speed
    identity_differences: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs
def identity(md: dict[str, Any]) -> dict[str, Any]:
    """What must agree between merged tables: every setting that changes a number (see :mod:`tables.settings`)."""
    return table_settings(md)


def reference_ms(md: dict[str, Any]) -> float | None:
    """The table's reference speed (its drift reference's latency, ms), or ``None`` without drift correction."""
    drift = md.get("drift_reference") or {}
    value = drift.get("latency_ms")
    return float(value) if value is not None else None


def load_source(path: str | Path) -> Source:
    """A table file, or a folder of parts (``part-*.parquet``), as one :class:`Source`."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(path.glob("part-*.parquet"))
        if not parts:
            raise MergeRefused(f"{path} is a folder without parts (part-*.parquet): name table files or part folders")
        frames, metadata = [], None
        for part in parts:
            frame, md = read_table(part)
            frames.append(frame)
            metadata = metadata or md
        assert metadata is not None
        return Source(str(path), pd.concat(frames, ignore_index=True), metadata)
    frame, md = read_table(path)
    return Source(str(path), frame, md)


def check_identities(sources: Sequence[Source], force: bool) -> list[str]:
    """The settings in which the inputs differ from the first; ``MergeRefused`` for any unless ``force``."""
    diffs: list[str] = []
    for src in sources[1:]:
        found = differences(sources[0].metadata, src.metadata)
        if found:
            diffs.append(f"{describe(found)} ({sources[0].label} vs {src.label})")
    if diffs and not force:
        raise MergeRefused(
            f"the inputs were measured with different settings: {diffs[0]}"
            + (f"; and {len(diffs) - 1} more inputs differ" if len(diffs) > 1 else "")
            + "; merge only tables of one target and settings, or pass --force to merge them with each row "
            "keeping its settings id"
        )
    return diffs


# --------------------------------------------------------------------------- duplicates
def conflict_tolerance(cv_a: float, cv_b: float) -> float:
    """Largest relative difference two measurements of one key may show as noise: max(3 x combined cv, 5%)."""
    a = 0.0 if not math.isfinite(cv_a) else cv_a
    b = 0.0 if not math.isfinite(cv_b) else cv_b
    return max(3.0 * math.hypot(a, b), MIN_CONFLICT_REL)


def relative_difference(a: float, b: float) -> float:
    """|a - b| relative to their mean."""
    mean = (a + b) / 2.0
    return abs(a - b) / mean if mean > 0 else 0.0


def choose_rows(frame: pd.DataFrame, labels: Sequence[str], report: MergeReport) -> pd.DataFrame:
    """One row per key from ``frame`` (column ``_src``: index into ``labels``); fills ``report``."""
    work = frame.reset_index(drop=True)
    ok = (work["status"] == STATUS_OK).to_numpy()
    cv = pd.to_numeric(work["cv"], errors="coerce").fillna(math.inf).to_numpy()
    at = pd.to_datetime(work["measured_at"], utc=True)
    rank = pd.DataFrame({"key": work["key"], "ok": ok, "neg_cv": -cv, "at": at, "order": range(len(work))})
    # for failed rows the newest wins; cv is NaN (-inf here) for every failed row, so it does not decide
    rank = rank.sort_values(["key", "ok", "neg_cv", "at", "order"], kind="stable")
    kept_order = rank.drop_duplicates("key", keep="last")["order"].to_numpy()
    kept = work.iloc[kept_order]
    counts = work["key"].value_counts()
    duplicated = set(counts[counts > 1].index)
    report.duplicated_keys = len(duplicated)
    if duplicated:
        kept_by_key = {k: i for k, i in zip(kept["key"], kept_order) if k in duplicated}
        for key, group in work[work["key"].isin(duplicated)].groupby("key", sort=True):
            best = work.loc[kept_by_key[key]]
            others = group.drop(index=kept_by_key[key])
            reason = _why_kept(best, others)
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
            if best["status"] != STATUS_OK:
                continue
            worst: Conflict | None = None
            for _, row in others[others["status"] == STATUS_OK].iterrows():
                a, b = float(best["latency_ms"]), float(row["latency_ms"])
                rel = relative_difference(a, b)
                tol = conflict_tolerance(float(best["cv"]), float(row["cv"]))
                if rel > tol and (worst is None or rel > worst.rel_diff):
                    worst = Conflict(
                        str(key),
                        a,
                        float(best["cv"]),
                        labels[int(best["_src"])],
                        b,
                        float(row["cv"]),
                        labels[int(row["_src"])],
                        rel,
                        tol,
                        reason,
                    )
            if worst is not None:
                report.conflicts.append(worst)
    return dedup_rows(kept.drop(columns=["_src"]))


def _why_kept(best: pd.Series, others: pd.DataFrame) -> str:
    if best["status"] != STATUS_OK:
        return "every row failed and it is the newest"
    ok_others = others[others["status"] == STATUS_OK]
    if ok_others.empty:
        return "an ok row beats a failed one"
    same = ok_others["latency_ms"].eq(best["latency_ms"]) & ok_others["measured_at"].eq(best["measured_at"])
    if bool(same.all()):
        return "the rows are copies of one measurement"
    return "it has the lowest cv"


# --------------------------------------------------------------------------- merge
def merge_sources(sources: Sequence[Source], *, force: bool = False) -> tuple[pd.DataFrame, dict, MergeReport]:
    """Merge inputs into (one row per key, metadata, report); ``MergeRefused`` for different tables."""
    if not sources:
        raise MergeRefused("nothing to merge: name at least one table or part folder")
    report = MergeReport(inputs=len(sources))
    report.identity_differences = check_identities(sources, force)
    frames = []
    target = reference_ms(sources[0].metadata)
    for i, src in enumerate(sources):
        frame = src.frame.copy()
        frame["_src"] = i
        own = reference_ms(src.metadata)
        same_graph = identity(src.metadata)["drift reference"] == identity(sources[0].metadata)["drift reference"]
        if target is not None and own is not None and own != target and same_graph:
            frame["latency_ms"] = frame["latency_ms"] * (target / own)
            report.rescaled.append(f"{src.label}: x{target / own:.4f} (reference {own:.4g} -> {target:.4g} ms)")
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    report.rows_in = len(frame)
    merged = choose_rows(frame, [s.label for s in sources], report) if len(frame) else empty_frame()
    report.keys = len(merged)
    report.failed = int((merged["status"] != STATUS_OK).sum())
    metadata = dict(sources[0].metadata)
    metadata.pop("shard", None)
    if metadata.get("floor") is None:
        metadata["floor"] = next((s.metadata["floor"] for s in sources if s.metadata.get("floor")), None)
    metadata["merged_from"] = [
        {
            "input": s.label,
            "rows": len(s.frame),
            "shard": s.metadata.get("shard"),
            "host": s.metadata.get("host"),
            "created_at": s.metadata.get("created_at"),
            "settings_id": settings_id(s.metadata),
        }
        for s in sources
    ]
    metadata["merged_at"] = utc_now().isoformat()
    if report.identity_differences:
        metadata["merge_forced"] = report.identity_differences
        metadata["settings_by_id"] = {settings_id(s.metadata): table_settings(s.metadata) for s in sources}
    if report.rescaled:
        metadata["merge_rescaled"] = report.rescaled
    return merged, metadata, report


def summary_lines(report: MergeReport, out: Path) -> list[str]:
    """What the merge prints: one summary line, the kept rows' reasons, the conflicts (10 in full)."""
    lines = [
        f"{out}: {report.keys} keys ({report.failed} failed) from {report.inputs} inputs, {report.rows_in} rows; "
        f"{report.duplicated_keys} keys appeared more than once, {len(report.conflicts)} of them conflicting"
    ]
    for line in report.rescaled:
        lines.append(f"  brought to the first input's drift reference speed: {line}")
    for reason, n in sorted(report.reasons.items(), key=lambda x: -x[1]):
        lines.append(f"  duplicates: kept one row of {n} keys because {reason}")
    for c in report.conflicts[:MAX_CONFLICT_LINES]:
        lines.append("  " + c.line())
    if len(report.conflicts) > MAX_CONFLICT_LINES:
        lines.append(f"  ... and {len(report.conflicts) - MAX_CONFLICT_LINES} more conflicts")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m profiler.merge",
        description="Merge shards, tables and part folders of one target into one latency table.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=text_arg,
        metavar="PARTS",
        help="table files (.parquet) or part folders (.parquet.parts)",
    )
    p.add_argument("--out", type=text_arg, required=True, help="the merged table (.parquet)")
    p.add_argument(
        "--force",
        action="store_true",
        help="merge tables measured with different settings; each row keeps the id of its settings",
    )
    return p


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    if out.is_dir():
        raise MergeRefused(f"--out {out} is a folder: give the merged table's file name")
    if out.exists() and not any(out.resolve() == p.resolve() for p in inputs):
        raise MergeRefused(f"--out {out} exists: name it among the inputs to merge into it, or remove it")
    sources = [load_source(p) for p in inputs]
    merged, metadata, report = merge_sources(sources, force=args.force)
    for diff in report.identity_differences:
        print(f"warning: merged despite different {diff} (--force)", file=sys.stderr)
    write_table(merged, out, metadata)
    for line in summary_lines(report, out):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 merged, 2 bad input or refused, 1 unexpected error)."""
    return run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
