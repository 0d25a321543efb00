"""Building one latency table: what to measure, measuring the missing keys, crash-safe parts, the final table.

:class:`TableJob` says everything about one table (target, backend configuration,
timing protocol, keys, rounds, drift reference, where it goes);
:func:`build_table` measures what is missing with an executor
(:mod:`profiler.executors`) and writes the rows as crash-safe parts (see
:mod:`tables.store`), then compacts them into the table. ``python -m
profiler.build`` makes one job per precision.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernels_bench.config import BackendConfig
from profiler.devices import DeviceProfile
from tables.atomic import remove_stale_temporaries
from tables.errors import PERMANENT, TRANSIENT, error_text
from tables.key import BlockKey
from tables.paths import lock_path, parts_dir, rounds_dir

#: Short keys: a key the first round measured under this many ms per batch (see :func:`build_table`).
DEFAULT_SHORT_BELOW_MS = 2.0
#: How many times the cpu profile measures its short keys by default (GPU profiles: once, like every key).
DEFAULT_SHORT_ROUNDS_CPU = 3
#: The short keys' further rounds are mixed into the last round over every key, cut into this many segments ...
SHORT_SEGMENTS = 12
#: ... a short key's next round joining the segment this many segments after the one that last measured it.
SHORT_ROUND_GAP = 2

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from kernels_bench.timing import TimingSettings
    from profiler.executors import Executor


@dataclass(frozen=True)
class TableJob:
    """One table to build (or to resume).

    Attributes:
        profile: the device profile (``--device``).
        config: the backend configuration.
        precision: the table's precision.
        batch: images per inference.
        timing: the timing protocol.
        keys: the keys this table holds (a shard's share of ``floor_keys``).
        out_dir: the output folder.
        table_name: the table's file name (a shard's own name, or the standard one).
        source: what was enumerated (stored in the metadata).
        detected: what was detected about the machine (stored as ``device``).
        floor_keys: the keys that choose the floor's input shape (default ``keys``), so
            every shard of one key set measures the same floor.
        order_seed: measure the keys still missing in a random order drawn from this seed
            (``None``: the given order; see :func:`measuring_order`).
        drift_reference: the drift reference's key (``None``: no drift correction).
        rounds: measure every key this many times (see :func:`build_table`).
        short_rounds: measure the short keys (those the first round measured under ``short_below_ms``) this many
            times in all (see :func:`build_table`; at most ``rounds``: no more than every key).
        short_below_ms: what a short key is (ms per batch).
        retry_failed: measure again keys recorded as failed.
        progress: show a progress bar.
        extra_metadata: more metadata fields (a shard's description).
        boundary: how each key's boundary is measured (:mod:`kernels_bench.boundary`; ``"none"``: not).
        speed_probe: without drift correction, time the default reference graph at the build's start and end
            (the table's ``steadiness`` speed and swing); ``False`` leaves them unknown.
    """

    profile: DeviceProfile
    config: BackendConfig
    precision: str
    batch: int
    timing: TimingSettings
    keys: tuple[BlockKey, ...]
    out_dir: Path
    table_name: str
    source: dict[str, Any] = field(default_factory=dict)
    detected: dict[str, Any] = field(default_factory=dict)
    floor_keys: tuple[BlockKey, ...] = ()
    order_seed: int | None = 0
    drift_reference: str | None = None
    rounds: int = 1
    short_rounds: int = 1
    short_below_ms: float = DEFAULT_SHORT_BELOW_MS
    retry_failed: bool = False
    progress: bool = True
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    boundary: str = "none"
    speed_probe: bool = True

    @property
    def path(self) -> Path:
        """The table's file."""
        return self.out_dir / self.table_name

    def replace(self, **changes: Any) -> TableJob:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def stored_rounds(self) -> int:
        """Rounds kept apart in the build's stores: ``rounds``, or ``short_rounds`` when larger."""
        return max(self.rounds, self.short_rounds)

    @property
    def short_keys(self) -> dict[str, Any] | None:
        """The table's ``short_keys`` metadata entry (``{"rounds": N, "below_ms": MS}``); ``None`` when the short
        keys get no more rounds than every key."""
        if self.short_rounds <= self.rounds:
            return None
        return {"rounds": self.short_rounds, "below_ms": float(self.short_below_ms)}


@dataclass
class BuildOutcome:
    """What :func:`build_table` did: the table written, keys measured now, and every failure of the table's keys
    (``(key, kind, error)``, kind ``transient`` or ``permanent``)."""

    path: Path
    measured: int
    failures: list[tuple[str, str, str]]

    def summary(self) -> str:
        """``"2 failed: 1 transient (disk full: /out/x.onnx), 1 permanent"``-like words for the failures, or ``""``."""
        if not self.failures:
            return ""
        kinds = {}
        for _, kind, error in self.failures:
            kinds.setdefault(kind, []).append(error)
        parts = []
        for kind in (TRANSIENT, PERMANENT):
            errors = kinds.get(kind)
            if not errors:
                continue
            paths = sorted({p for e in errors for p in _paths_in(e)})
            where = f" ({', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''})" if paths else ""
            rerun = "a plain rerun measures them again" if kind == TRANSIENT else "--retry-failed measures them again"
            parts.append(f"{len(errors)} {kind}{where}: {rerun}")
        return "; ".join(parts)


def _paths_in(error: str) -> list[str]:
    """File paths an OS error's text names (``...: '/path'``)."""
    import re

    return re.findall(r"'(/[^']+)'", error)


def floor_shape(keys: Sequence[BlockKey], batch: int) -> tuple[int, ...]:
    """Input shape of the identity graph used for the backend floor: the median-sized key input."""
    sizes = sorted(keys, key=lambda k: k.cin * k.h * k.w)
    k = sizes[len(sizes) // 2]
    return (batch, k.cin, k.h, k.w)


def measuring_order(keys: Sequence[BlockKey], seed: int | None) -> list[BlockKey]:
    """The keys in the order they are measured: shuffled with ``seed``, or as given when ``seed`` is None.

    Keys are enumerated network by network, so in the given order the blocks of
    one network are measured within seconds of each other and a machine whose
    speed drifts over minutes moves a whole network's block sum at once. In a
    shuffled order each network's blocks are spread over the build and the drift
    averages out over its blocks. The order depends only on the set of keys and
    the seed, not on how they were listed.
    """
    if seed is None:
        return list(keys)
    ordered = sorted(keys, key=str)
    random.Random(seed).shuffle(ordered)
    return ordered


def round_places(out_dir: Path, name: str, rounds: int) -> list[tuple[Path, str]]:
    """(folder, file name) of each round's store of table ``name``: the table itself for one round,
    else ``<out>/<table>.rounds/round-1.parquet``, ``round-2.parquet``, ..."""
    if rounds == 1:
        return [(out_dir, name)]
    return [(rounds_dir(out_dir, name), f"round-{r + 1}.parquet") for r in range(rounds)]


def short_keys(rows: pd.DataFrame, below_ms: float) -> set[str]:
    """The keys of ``rows`` (a round's stored rows) measured ok under ``below_ms`` ms per batch."""
    if not len(rows):
        return set()
    ok = rows[(rows["status"] == "ok") & (rows["latency_ms"] < below_ms)]
    return {str(k) for k in ok["key"]}


def drift_summary(drift: Mapping[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
    """The ``drift_reference`` entry with the speed every key is brought to and how the reference ran.

    ``latency_ms`` becomes the machine's fastest sustained speed over the build
    (:func:`tables.steadiness.fastest_sustained_ms` of every ok row's ``reference_ms``;
    ``speed`` says so), the reference timed alone at the start is kept as
    ``measured_alone_ms``; ``during_build``: the median, 10th and 90th percentile of
    the rows' ``reference_ms`` (ms per batch) and their count: how much the
    machine's speed moved during the build, which the correction took out.
    """
    import numpy as np

    from tables.steadiness import FASTEST_SUSTAINED_PERCENTILE, fastest_sustained_ms, reference_times

    ok = reference_times(rows)
    out = dict(drift)
    out.setdefault("measured_alone_ms", out.get("latency_ms"))
    target = fastest_sustained_ms(ok)
    if target is not None:
        out["latency_ms"] = target
        out["speed"] = f"fastest sustained: the {FASTEST_SUSTAINED_PERCENTILE:g}th percentile of the reference's times"
    if len(ok):
        out["during_build"] = {
            "median_ms": float(np.median(ok)),
            "p10_ms": float(np.percentile(ok, 10)),
            "p90_ms": float(np.percentile(ok, 90)),
            "n": len(ok),
        }
    return out


def steadiness_note(path: Path) -> list[str]:
    """Lines on how steady the machine was during the build of the table at ``path`` (may be empty).

    With drift correction: how far the reference's speed moved (10th to 90th
    percentile) and the speed every key was brought to. Then, when the build
    crossed a threshold of :mod:`tables.steadiness`, the one-line warning that its
    absolute figures are unreliable, with the figures and what to do.
    """
    from tables.schema import read_table
    from tables.steadiness import verdict_line

    try:
        _, md = read_table(path)
    except ValueError:
        return []
    lines = []
    during = (md.get("drift_reference") or {}).get("during_build")
    if during:
        spread = (during["p90_ms"] - during["p10_ms"]) / during["median_ms"] * 100
        lines.append(
            f"  drift reference: {during['p10_ms']:.4g}-{during['p90_ms']:.4g} ms (10th-90th percentile) while the "
            f"keys were timed, a {spread:.1f}% swing of the machine's speed; every key was brought to "
            f"{md['drift_reference']['latency_ms']:.4g} ms (its fastest sustained speed)"
        )
    verdict = verdict_line(md.get("steadiness"))
    if verdict:
        lines.append(verdict)
    return lines


def done_counts(out_dir: Path, name: str, keys: Sequence[BlockKey], rounds: int = 1) -> list[int]:
    """Keys of ``keys`` already stored in table ``name``, per round (one entry for a table built in one round)."""
    from tables.store import PartStore

    counts = []
    for folder, file in round_places(out_dir, name, rounds):
        try:
            status = PartStore(folder, file, None).done_keys() if folder.is_dir() else {}
        except (OSError, ValueError):
            status = {}
        counts.append(sum(1 for k in keys if str(k) in status))
    return counts


def build_command(metadata: Mapping[str, Any], archs_file: Path | str, out_dir: Path | str) -> str:
    """The ``profiler.build`` command that measures the keys of ``archs_file`` into the table of ``metadata``.

    Every setting that changes the table's numbers is repeated (backend options,
    timing protocol where it is not the default, drift reference, rounds), so the
    keys it adds are measured as the table's own were.
    """
    from kernels_bench.timing import TimingSettings
    from profiler.options import TIMING_FLAGS

    try:
        backend_flags = BackendConfig.from_metadata(metadata).cli_args()
    except ValueError:  # not a backend this tool runs (a synthetic table): name it as it is
        backend_flags = ["--backend", str(metadata.get("backend"))]
    parts = [
        "python -m profiler.build",
        f"--device {metadata.get('device_profile')}",
        *backend_flags,
        f"--precision {metadata.get('precision')}",
        f"--batch {metadata.get('batch')}",
    ]
    timing = dict(metadata.get("timing") or {})
    defaults = TimingSettings().to_dict()
    for flag, name in TIMING_FLAGS.items():
        if name in timing and timing[name] != defaults.get(name):
            value = timing[name]
            parts.append(f"--{flag.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value:g}"))
    drift = metadata.get("drift_reference")
    if drift:
        parts.append(f"--drift-correct --drift-reference {drift['key']}")
    else:  # the cpu profile drift-corrects by default: say so for a table measured without
        parts.append("--no-drift-correct")
    rounds = int(metadata.get("rounds") or 1)
    if rounds > 1:
        parts.append(f"--rounds {rounds}")
    short = metadata.get("short_keys")
    if short:
        parts.append(f"--short-rounds {int(short['rounds'])} --short-below {float(short['below_ms']):g}")
    elif metadata.get("device_profile") == "cpu" and rounds < DEFAULT_SHORT_ROUNDS_CPU:
        parts.append("--short-rounds 1")  # the cpu profile measures short keys again by default: say so
    from kernels_bench.boundary import DEFAULT_BOUNDARY

    boundary = (metadata.get("boundary") or {}).get("method", "none")
    if boundary != DEFAULT_BOUNDARY:
        parts.append(f"--boundary {boundary}")
    parts += [f"--archs {archs_file}", f"--out {out_dir}"]
    return " ".join(parts)


def table_metadata(job: TableJob, info: Mapping[str, Any], floor: Any, drift: Any, peaks: Any = None) -> dict[str, Any]:
    """The table's metadata document for ``job`` (built by :func:`tables.schema.build_metadata`).

    ``info`` is what the executor's ``start()`` returned (the backend's environment,
    settings and opset); ``floor`` and ``drift`` the floor and drift-reference entries;
    ``peaks`` the roofline's peaks (:func:`peaks_or_warn`), if any.
    """
    from tables.schema import build_metadata

    env = dict(info["environment"])
    return build_metadata(
        device_profile=job.profile.name,
        device=job.detected,
        engine={"name": env.get("engine"), "version": env.get("engine_version")},
        backend=job.config.backend,
        backend_settings=info["settings"],
        precision=job.precision,
        batch=job.batch,
        timing=job.timing.to_dict(),
        floor=floor,
        opset=info.get("opset"),
        source=job.source,
        environment=env,
        key_order={"order": "given"} if job.order_seed is None else {"order": "shuffled", "seed": job.order_seed},
        drift_reference=drift,
        rounds=job.rounds,
        **({"boundary": {"method": job.boundary}} if job.boundary != "none" else {}),
        **({"short_keys": job.short_keys} if job.short_keys else {}),
        **({"peaks": peaks} if peaks else {}),
        **job.extra_metadata,
    )


def peaks_or_warn(job: TableJob) -> dict[str, Any] | None:
    """The peaks a table's roofline is drawn against (metadata ``peaks``): a GPU profile's published ones, or
    for the cpu profile a probe of about a second at the build's thread count
    (:func:`kernels_bench.peaks.table_peaks`); ``None`` with a warning when the probe fails (the peaks only
    serve the roofline: the keys are measured anyway)."""
    from kernels_bench.peaks import table_peaks

    try:
        return table_peaks(job.profile.name, threads=max(1, int(getattr(job.config, "threads", 1) or 1)))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        print(
            f"warning: the device's peaks could not be measured: {error_text(exc)}; the table gets none",
            file=sys.stderr,
        )
        return None


def _probe(executor: Executor, job: TableJob, probes: list[float]) -> str | None:
    """Time the default reference graph alone at batch 1 (a probe of the machine's speed for a build without
    drift correction) and append its time to ``probes``; returns its key, or ``None`` with a warning when it
    cannot be timed (the build goes on: the probe corrects nothing).

    The reference is timed twice and the second figure kept: the first timing of a process reads slower
    (its engine session, caches and clock still warming; 7.1 against 5.6 ms, 9.5 against 5.6-6.6 ms in
    builds on the 2-vCPU VM), which would show as the machine's speed moving when it did not."""
    try:
        executor.reference(1, job.precision)
        entry = executor.reference(1, job.precision)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        print(f"warning: the speed probe could not be timed: {error_text(exc)}", file=sys.stderr)
        return None
    probes.append(float(entry["latency_ms"]))
    return str(entry.get("key"))


def measure_floor_or_warn(executor: Executor, job: TableJob, keys: Sequence[BlockKey]) -> dict[str, Any] | None:
    """The table's floor entry, or ``None`` with a warning when the identity graph cannot be timed.

    The floor only serves the ``floor_linear`` calibration; a table without one
    is complete, so its keys are measured whatever happens to the floor.
    """
    shape = floor_shape(job.floor_keys or keys, job.batch)
    try:
        return executor.floor(shape, job.batch, job.precision)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        print(
            f"warning: the backend floor (an identity graph of shape {list(shape)}) could not be timed: "
            f"{error_text(exc)}; the table gets no floor, the keys are measured anyway",
            file=sys.stderr,
        )
        return None


def build_table(job: TableJob, executor: Executor, info: Mapping[str, Any]) -> BuildOutcome:
    """Measure the missing keys of one table; returns the table's path, keys measured now and failures.

    ``executor`` measures (see :mod:`profiler.executors`); this function alone writes
    the rows, as crash-safe parts. ``info`` is what ``executor.start()`` returned.
    The keys still to measure are taken in :func:`measuring_order`. With a drift
    reference (the executor must have been made with it) the reference graph is
    timed alone once (the table's reference speed, metadata ``drift_reference``)
    and every key's ``latency_ms`` is brought to that speed
    (:func:`tables.schema.drift_corrected`).

    With ``job.rounds`` > 1 every key is measured once per round, each round a pass
    over all keys in its own shuffled order (``order_seed + round``) kept as its
    own crash-safe table under ``<table>.rounds/``; the table then holds, per key,
    the median of its rounds (:func:`tables.store.combine_rounds`). ``measured``
    counts key measurements made now (keys x rounds).

    With ``job.short_rounds`` > ``job.rounds`` the short keys (those the first
    round measured under ``job.short_below_ms``) get the rounds beyond
    ``job.rounds``, mixed into the last round over every key: a short key's next
    round comes :data:`SHORT_ROUND_GAP` of the round's :data:`SHORT_SEGMENTS`
    segments after its previous one, amid keys of every size, so that a key whose
    thirty samples span a few hundredths of a second is measured at moments of the
    build minutes apart and the table holds the median. The short keys are read
    from the first round's stored rows, so a resumed build picks the same ones.
    The table's ``short_keys`` metadata records the setting.
    """
    from tables.schema import apply_drift_correction, write_table
    from tables.store import BuildLock, PartStore, check_same_identity, combine_rounds

    out_dir, name, rounds = job.out_dir, job.table_name, job.stored_rounds
    keys = list(job.keys)
    with BuildLock(lock_path(out_dir, name)):
        # what killed writes left behind (temporary files of dead processes) goes first
        for folder in (out_dir, parts_dir(out_dir, name), *(d for d, _ in round_places(out_dir, name, rounds))):
            remove_stale_temporaries(folder)
        final = PartStore(out_dir, name, None)
        # one round: the table itself; several: one store per round, combined into the table at the end
        stores = [final] if rounds == 1 else [PartStore(d, f, None) for d, f in round_places(out_dir, name, rounds)]
        previous = final.metadata() or stores[0].metadata()
        drift = (previous or {}).get("drift_reference")
        if previous is not None:  # every setting that changes a number must be the table's (before any work)
            same_graph = drift and drift.get("key") == job.drift_reference
            asked = (
                drift if same_graph else ({"key": job.drift_reference, "ratio": 1.0} if job.drift_reference else None)
            )
            candidate = table_metadata(job, info, previous.get("floor"), asked)
            check_same_identity(previous, candidate, f"the existing table {job.path}", "this build")
        statuses = [store.done_keys() for store in stores]
        wanted = [str(k) for k in keys]

        def pending(r: int, skip: set[str]) -> list[BlockKey]:
            # missing keys, keys whose failure was the machine's (a plain rerun measures them again), and with
            # --retry-failed the permanent failures too; a round past job.rounds measures the short keys only
            status = statuses[r]
            redo = {TRANSIENT, "failed"} if job.retry_failed else {TRANSIENT}
            only = first_short if r >= job.rounds else None
            return [
                k
                for k, text in zip(keys, wanted)
                if text not in skip and status.get(text, TRANSIENT) in redo and (only is None or text in only)
            ]

        # the short keys the first round has found so far (for the plan; the first round adds to them as it goes)
        first_short = short_keys(stores[0].rows(), job.short_below_ms) & set(wanted) if job.short_keys else set()
        # a key that failed for good in a round is not measured in the later ones (unless --retry-failed)
        failed_before = set() if job.retry_failed else {k for st in statuses for k, v in st.items() if v == "failed"}
        plan = [len(pending(r, failed_before)) for r in range(rounds)]
        planned = sum(plan)
        floor = (previous or {}).get("floor")
        if floor is None and planned:
            floor = measure_floor_or_warn(executor, job, keys)
        if job.drift_reference is not None and drift is None and planned:
            drift = executor.reference(job.batch, job.precision)
        probes = list(((previous or {}).get("steadiness") or {}).get("probes_ms") or [])
        probe_key = ((previous or {}).get("steadiness") or {}).get("probe_key")
        if job.drift_reference is None and job.speed_probe and planned:
            probe_key = _probe(executor, job, probes) or probe_key
        peaks = (previous or {}).get("peaks")
        if peaks is None and planned:
            peaks = peaks_or_warn(job)
        metadata = table_metadata(job, info, floor, drift, peaks)
        for store in stores:
            store.set_metadata(metadata)
        failures: dict[str, tuple[str, str]] = {}
        measured = 0
        bar = None
        label = f"{job.precision} b{job.batch}" + (f" x{executor.workers}" if executor.workers > 1 else "")
        if job.progress and planned:
            from tqdm import tqdm

            bar = tqdm(total=planned, desc=label, unit="key", dynamic_ncols=True, file=sys.stderr)

        def run(items: Sequence[tuple[BlockKey, int]]) -> list[dict[str, Any]]:
            """Measure each (key, round) of ``items`` (a key at most once) into its round's store; the rows."""
            nonlocal measured
            where = {str(k): r for k, r in items}
            done: list[dict[str, Any]] = []
            for rows in executor.measure([str(k) for k, _ in items], job.batch, job.precision):
                if drift is not None:
                    rows = [apply_drift_correction(row, float(drift["latency_ms"])) for row in rows]
                for r in sorted({where[row["key"]] for row in rows}):
                    stores[r].append([row for row in rows if where[row["key"]] == r])
                for row in rows:
                    if row["status"] == "failed":
                        failures[row["key"]] = (row.get("failure_kind") or PERMANENT, row["error"])
                        if not job.retry_failed and row.get("failure_kind") != TRANSIENT:
                            failed_before.add(row["key"])
                if bar is not None:
                    bar.set_postfix_str(rows[-1]["block"], refresh=False)
                    bar.update(len(rows))
                done.extend(rows)
            measured += len(items)
            return done

        def interleaved(todo: list[BlockKey], last: int) -> None:
            """Round ``last`` (the last over every key) with the short keys' further rounds mixed in.

            The round is cut into :data:`SHORT_SEGMENTS` segments; a short key's next round joins the segment
            :data:`SHORT_ROUND_GAP` segments after the one that measured it (keys known short before the round
            spread evenly over it), each segment shuffled, so that a short key's rounds fall at moments of the
            build minutes apart, amid the keys of every size, not in one pass at its end."""
            redo = {TRANSIENT, "failed"} if job.retry_failed else {TRANSIENT}
            by_text = dict(zip(wanted, keys))

            def next_round(text: str, after: int) -> int | None:
                for r in range(max(after + 1, job.rounds), rounds):
                    if statuses[r].get(text, TRANSIENT) in redo:
                        return r
                return None

            n_seg = max(1, min(SHORT_SEGMENTS, len(todo)))
            size = -(-len(todo) // n_seg) if todo else 0
            chunks = [todo[i * size : (i + 1) * size] for i in range(n_seg)]
            queue: dict[str, tuple[int, int]] = {}  # key -> (its next round, the first segment it may join)

            def enqueue(texts: Sequence[str], at: int, spread: bool) -> None:
                fresh = [t for t in measuring_order([by_text[t] for t in texts], job.order_seed) if str(t) not in queue]
                for j, key in enumerate(fresh):
                    text = str(key)
                    r = next_round(text, -1)
                    if r is None or text in failed_before:
                        continue
                    queue[text] = (r, at + (j * n_seg // len(fresh) if spread else 0))
                    if bar is not None and text not in first_short:  # those are in the plan already
                        bar.total += sum(1 for q in range(r, rounds) if statuses[q].get(text, TRANSIENT) in redo)

            # read again: with rounds over every key, the first one was measured after the plan was made
            known = first_short if last == 0 else short_keys(stores[0].rows(), job.short_below_ms) & set(wanted)
            enqueue(sorted(known), 0, spread=True)
            i = 0
            while i < len(chunks) or queue:
                main = chunks[i] if i < len(chunks) else []
                ready = [t for t, (_, at) in queue.items() if at <= i]
                if not main and not ready:  # nothing else left to measure now: no reason to wait
                    i = min((at for _, at in queue.values()), default=i + 1)
                    continue
                in_main = {str(k) for k in main}
                extras = [(by_text[t], queue[t][0]) for t in sorted(ready) if t not in in_main]
                items = [(k, last) for k in main] + extras
                if job.order_seed is not None:
                    random.Random(f"{job.order_seed}-{last}-{i}").shuffle(items)
                rows = run(items)
                for key, r in extras:
                    text = str(key)
                    after = next_round(text, r)
                    if after is None or text in failed_before:
                        del queue[text]
                    else:
                        queue[text] = (after, i + SHORT_ROUND_GAP)
                if last == 0:  # the first round: the short keys it finds get their further rounds from now on
                    found = [
                        row["key"]
                        for row in rows
                        if row["key"] in in_main and row["status"] == "ok" and row["latency_ms"] < job.short_below_ms
                    ]
                    enqueue(found, i + SHORT_ROUND_GAP, spread=False)
                i += 1

        try:
            for r in range(job.rounds if job.short_keys else rounds):
                todo = pending(r, failed_before)
                todo = measuring_order(todo, None if job.order_seed is None else job.order_seed + r)
                if bar is not None and rounds > 1:
                    bar.total -= plan[r] - len(todo)  # keys that failed in an earlier round of this run
                    what = f"round {r + 1}/{job.rounds}" if job.rounds > 1 else ""
                    if job.short_keys and r == job.rounds - 1:
                        further = f"s {job.rounds + 1}-{rounds}" if rounds > job.rounds + 1 else f" {rounds}"
                        what += (" and " if what else "") + f"short keys' round{further}"
                    bar.set_description(f"{label} {what}", refresh=False)
                if job.short_keys and r == job.rounds - 1:
                    interleaved(todo, r)
                else:
                    run([(k, r) for k in todo])
                if rounds > 1:
                    stores[r].compact()
            if job.short_keys:
                for store in stores[job.rounds :]:
                    store.compact()
        finally:
            if bar is not None:
                bar.close()
        if job.drift_reference is None and job.speed_probe and measured:
            probe_key = _probe(executor, job, probes) or probe_key
        from tables.steadiness import rescale_to, steadiness

        if rounds == 1:
            rows = final.rows()
            update: dict[str, Any] = {}
            transform = None
            if drift:
                update["drift_reference"] = summary = drift_summary(drift, rows)
                target = float(summary["latency_ms"])
                transform = lambda frame: rescale_to(frame, target)  # noqa: E731 - one expression
                rows = transform(rows)
            update["steadiness"] = steadiness(
                rows,
                drift_corrected=drift is not None,
                probes_ms=probes,
                probe_key=probe_key,
                samples_kept=job.timing.samples_kept,
            )
            path = final.compact(update, transform)
        else:
            import pandas as pd

            per_round = [store.rows() for store in stores]
            table_md = final.metadata() or metadata
            if drift:
                summary = drift_summary(drift, pd.concat(per_round, ignore_index=True))
                per_round = [rescale_to(frame, float(summary["latency_ms"])) for frame in per_round]
                table_md = {**table_md, "drift_reference": summary}
            combined = combine_rounds(per_round)
            table_md = {
                **table_md,
                "steadiness": steadiness(
                    pd.concat(per_round, ignore_index=True),
                    drift_corrected=drift is not None,
                    probes_ms=probes,
                    probe_key=probe_key,
                    samples_kept=job.timing.samples_kept,
                ),
            }
            path = write_table(combined, job.path, table_md)
        # permanent failures of earlier runs that were not retried still count for the summary
        wanted_set = set(wanted)
        for status in statuses:
            for k, st in status.items():
                if st == "failed" and not job.retry_failed and k in wanted_set:
                    failures.setdefault(
                        k, (PERMANENT, "failed in an earlier run (use --retry-failed to measure it again)")
                    )
        return BuildOutcome(path, measured, [(k, kind, error) for k, (kind, error) in failures.items()])


__all__ = [
    "DEFAULT_SHORT_BELOW_MS",
    "DEFAULT_SHORT_ROUNDS_CPU",
    "BuildOutcome",
    "TableJob",
    "build_command",
    "build_table",
    "done_counts",
    "drift_summary",
    "floor_shape",
    "measuring_order",
    "round_places",
    "short_keys",
    "steadiness_note",
    "table_metadata",
]
