"""Expected latency of a staged search space under choice probabilities, differentiable in them (one-shot NAS).

One-shot supernets (ProxylessNAS, FBNet, TuNAS) learn, for every choice of the space, a
probability over its values, and add the expected latency to the loss. Here the choices are the
positions of a staged space's encoding (:attr:`profiler.spaces.staged.StagedSpace.positions`:
the resolution, then per stage its filters, kernel, expansion, SE, activation and layer count),
each with its own probability vector over its codes, independent of the others. Then

    E[latency] = sum over stages of  P(layers >= 1) * E[first layer] + E[max(layers - 1, 0)] * E[repeated layer]

exactly, because a stage's layer count is independent of its layers' keys, and each expectation
over a layer's key is a contraction of that stage's dense latency grid (one cell per
resolution, input channels, filters, kernel, expansion, SE and activation, and the kernels of
earlier unpadded stride-2 stages where those set the stage's input size;
:class:`tables.space_grid.SpaceLookup`, the grids :func:`tables.predictor.predict_many` reads)
with the probability vectors. A stage's input channels are the filters of the last non-empty
stage before it: their distribution follows from the filters and layer probabilities of the
stages before, and so does its gradient.

With ``calibrated=True`` (default) the table's calibration is folded in: every calibration
model is affine in per-block features (latency, one block, its type, its input and output), so
E[calibrated latency] = intercept + the same sum over each block's calibrated share. For
one-hot probabilities the value is :func:`tables.predictor.predict` of that architecture.

    from profiler.expected_latency import ExpectedLatency
    term = ExpectedLatency(table, "gpunet")                  # once: resolves the grids (about a second)
    logits = [torch.zeros(len(p.codes), requires_grad=True) for p in term.space.positions]
    latency = term([torch.softmax(l, 0) for l in logits])   # ms per batch, a 0-d tensor
    (loss + 0.1 * latency).backward()

torch is imported when a term is evaluated, not when this module is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.spaces import resolve_space
from profiler.spaces.staged import StagedSpace
from tables.space_grid import SpaceLookup
from tables.table import LatencyTable, MissingKeysError, as_key


@dataclass(frozen=True)
class _Stage:
    """One stage's grids and index maps (numpy); see :class:`ExpectedLatency`."""

    first: np.ndarray  # (cin * filters, kernel * expansion * se * act * resolution), per-batch ms share
    rest: np.ndarray | None  # (cin or 1, filters, rest of the cell), None when the stage has one layer at most
    rest_by_cin: bool  # the repeated layer's key depends on the input channels (a stage keeping its width)
    n_cin: int
    n_filters: int
    columns: dict[str, int | None]  # filters, layers -> encoding position, None when the field has one choice
    cell_columns: tuple[int | None, ...]  # the cell's digits' encoding positions, slowest first
    layer_counts: np.ndarray  # layer values of the layers digit (ascending)
    to_next: np.ndarray  # (next cins, this stage's outputs): where each output width lands
    keep_next: np.ndarray | None  # (next cins, this stage's cins) for a stage that may be empty


def calibrated_shares(table: LatencyTable, calibrated: bool = True) -> tuple[np.ndarray, float]:
    """(each key's share of a network's predicted latency, aligned with ``table.block_array``; the intercept).

    Without a calibration (or with ``calibrated=False``): the block latencies and ``table.network_ms``. With
    one, the shares come from :meth:`tables.calibration.Calibration.apply` itself with ``extrapolate=True`` (every
    model is affine in the per-block features), so intercept + the shares of a network's keys is its prediction by
    the fitted map: :func:`tables.predictor.predict`'s for a network the size of the calibration's fit networks
    (beyond them ``predict`` fades the correction, which is not a per-block share).
    All in ms per batch.
    """
    latency = table.block_array
    cal = table.calibration if calibrated else None
    if cal is None:
        return latency, table.network_ms
    blocks = table.to_frame().set_index("key").loc[table.keys, "block"].to_numpy()
    types = {str(t): np.where(blocks == t, latency, 0.0) for t in np.unique(blocks)}
    # the fitted affine map itself (extrapolate=True: no fading by network size, which is not per block)
    intercept = float(cal.apply(table.network_ms, 0, {}, 0.0, extrapolate=True))  # a network pays it once
    shares = np.asarray(
        cal.apply(latency, np.ones(len(latency)), types, table.io_array, extrapolate=True), dtype=np.float64
    )
    return shares - intercept, intercept


class ExpectedLatency:
    """E[latency] (ms per batch of the table's batch) of a staged space under per-position probabilities.

    ``space``: a :class:`~profiler.spaces.staged.StagedSpace` or a name / space file for
    :func:`profiler.spaces.resolve_space`. Built once per (table, space); raises
    :class:`tables.table.MissingKeysError` naming every key of the space the table lacks (all are
    needed: every architecture has a probability). Call it with the probabilities (see
    :meth:`__call__`); the result is a 0-d torch tensor whose gradient flows to them.
    """

    def __init__(self, table: LatencyTable, space: StagedSpace | str, *, calibrated: bool = True) -> None:
        self.space = sp = resolve_space(space)
        self.table = table
        shares, self.intercept = calibrated_shares(table, calibrated)
        lookup = SpaceLookup(table, sp, shares)
        col = {(p.stage, p.field): p.index for p in sp.positions[1:]}
        missing: dict[str, None] = {}
        self._stages: list[_Stage] = []
        cins = [int(sp.in_channels)]
        n_res = len(sp.resolutions)
        for si, (st, grid) in enumerate(zip(sp.stages, lookup.stages)):
            keeps = st.filters is None
            outs = list(cins) if keeps else [int(f) for f in st.filters]  # type: ignore[union-attr]
            n_f = 1 if keeps else len(outs)
            # earlier unpadded stride-2 stages whose kernels set this stage's input size (none when all are padded)
            sized = tuple(getattr(sp, "kernel_sized_stages", lambda i: ())(si))
            cell = len(st.kernels) * len(st.expansions) * len(st.se) * len(st.acts) * n_res
            cell *= int(np.prod([len(sp.stages[c].kernels) for c in sized]))
            if len(cins) * n_f * cell != grid.n_base:
                raise ValueError(f"{sp.name} {st.name}: the latency grid does not have the layout this term reads")
            first = np.asarray(grid.first_lat, dtype=np.float64)
            self._collect(first, grid.first_text, missing)
            rest = None
            if grid.has_rest:
                full = np.asarray(grid.rest_lat, dtype=np.float64).reshape(len(cins), n_f, cell)
                self._collect(full.reshape(-1), grid.rest_text, missing)
                rest = full if keeps else full[:1]
            next_cins = sorted(set(outs) | (set(cins) if st.may_be_empty else set()))
            to_next = np.zeros((len(next_cins), len(outs)))
            to_next[[next_cins.index(c) for c in outs], range(len(outs))] = 1.0
            keep_next = None
            if st.may_be_empty:
                keep_next = np.zeros((len(next_cins), len(cins)))
                keep_next[[next_cins.index(c) for c in cins], range(len(cins))] = 1.0
            columns = {f: col.get((si, f)) for f in ("filters", "layers")}
            # the cell's digits, slowest first (the grid's order: resolution fastest, then the earlier kernels)
            cell_columns = tuple(col.get((si, f)) for f in ("kernel", "expansion", "se", "act"))
            cell_columns += tuple(col.get((c, "kernel")) for c in reversed(sized)) + (0,)
            self._stages.append(
                _Stage(
                    first.reshape(len(cins) * n_f, cell),
                    rest,
                    keeps,
                    len(cins),
                    n_f,
                    columns,
                    cell_columns,
                    np.asarray(sorted(st.layers), dtype=np.float64),
                    to_next,
                    keep_next,
                )
            )
            cins = next_cins
        if missing:
            raise MissingKeysError([as_key(k) for k in missing], table.identity)
        self._tensors: dict[tuple[Any, Any], list[dict[str, Any]]] = {}

    @staticmethod
    def _collect(values: np.ndarray, texts: Sequence[str], missing: dict[str, None]) -> None:
        for i in np.flatnonzero(np.isnan(values)).tolist():
            missing.setdefault(texts[i % len(texts)], None)

    def _on(self, dtype: Any, device: Any) -> list[dict[str, Any]]:
        import torch

        cached = self._tensors.get((dtype, device))
        if cached is None:

            def t(a: np.ndarray | None) -> Any:
                return None if a is None else torch.as_tensor(a, dtype=dtype, device=device)

            cached = [
                {
                    "first": t(s.first),
                    "rest": t(s.rest),
                    "present": t((s.layer_counts >= 1).astype(np.float64)),
                    "absent": t((s.layer_counts == 0).astype(np.float64)),
                    "repeats": t(np.maximum(s.layer_counts - 1, 0)),
                    "to_next": t(s.to_next),
                    "keep_next": t(s.keep_next),
                }
                for s in self._stages
            ]
            self._tensors[(dtype, device)] = cached
        return cached

    def _vectors(self, probabilities: Sequence[Any] | Mapping[Any, Any]) -> list[Any]:
        positions = self.space.positions
        if isinstance(probabilities, Mapping):
            by_label = {p.label: p.index for p in positions}
            probs: list[Any] = [None] * len(positions)
            for name, value in probabilities.items():
                index = by_label.get(name, name)
                if not isinstance(index, int) or not 0 <= index < len(positions):
                    raise ValueError(
                        f"{name!r} is no position of {self.space.name}; use labels like {positions[1].label!r}"
                    )
                probs[index] = value
        else:
            probs = list(probabilities)
        if len(probs) != len(positions):
            raise ValueError(
                f"give one probability vector per position of {self.space.name}: {len(positions)}, got {len(probs)}"
            )
        out = []
        for p, value in zip(positions, probs):
            if value is None:
                if len(p.codes) > 1:
                    raise ValueError(f"{self.space.name}: no probabilities for {p.label} ({len(p.codes)} choices)")
                out.append(None)
                continue
            if value.ndim != 1 or value.shape[0] != len(p.codes):
                shape = tuple(value.shape)
                raise ValueError(
                    f"{self.space.name}: {p.label} has {len(p.codes)} choices, got probabilities of {shape}"
                )
            out.append(value)
        return out

    def __call__(self, probabilities: Sequence[Any] | Mapping[Any, Any]) -> Any:
        """E[latency] in ms per batch, a 0-d torch tensor.

        ``probabilities``: one 1-D tensor per position of ``space.positions`` (in order; or a mapping
        from position labels or indices), each over that position's ``codes`` in ascending order,
        summing to 1 (not checked: a softmax gives that). A position with a single choice may be
        ``None``. Tensors of one dtype and device; the grids follow them there.
        """
        import torch

        vectors = self._vectors(probabilities)
        ref = next(v for v in vectors if v is not None)
        grids = self._on(ref.dtype, ref.device)
        total: Any = self.intercept
        p_cin = None  # the input channels' distribution; None while it is one fixed width
        for stage, g in zip(self._stages, grids):
            c = stage.columns
            q = None  # the cell's probabilities: kernel, expansion, SE, activation, [earlier kernels], resolution
            for column in stage.cell_columns:
                v = vectors[column] if column is not None else None
                if v is not None and v.shape[0] > 1:
                    q = v if q is None else torch.outer(q, v).reshape(-1)
            p_f = vectors[c["filters"]] if c["filters"] is not None and not stage.rest_by_cin else None
            p_layers = vectors[c["layers"]] if c["layers"] is not None else None
            present = 1.0 if p_layers is None else p_layers @ g["present"]
            first = _contract(g["first"], q).reshape(stage.n_cin, stage.n_filters)
            total = total + present * _pair(p_cin, first, p_f)
            if g["rest"] is not None and p_layers is not None:
                rest = _contract(g["rest"], q)  # (cin or 1, filters)
                total = total + (p_layers @ g["repeats"]) * _pair(p_cin if stage.rest_by_cin else None, rest, p_f)
            p_out = p_cin if stage.rest_by_cin else p_f
            p_next = g["to_next"][:, 0] if p_out is None else g["to_next"] @ p_out
            if g["keep_next"] is not None and p_layers is not None:
                kept = g["keep_next"][:, 0] if p_cin is None else g["keep_next"] @ p_cin
                p_next = present * p_next + (p_layers @ g["absent"]) * kept
            p_cin = None if p_next.shape[0] == 1 else p_next
        return total


def _contract(grid: Any, q: Any) -> Any:
    """``grid`` with its last axis (the cell) contracted with ``q`` (all cells alike when ``q`` is None)."""
    return grid[..., 0] if q is None else grid @ q


def _pair(p_cin: Any, values: Any, p_f: Any) -> Any:
    """p_cin^T values p_f for a (cin, filters) matrix, a fixed side (None) taking its only row or column."""
    v = values[0] if p_cin is None else p_cin @ values
    return v[0] if p_f is None else v @ p_f


def uniform_probabilities(space: StagedSpace | str, **tensor_options: Any) -> list[Any]:
    """One uniform probability vector per position of ``space`` (torch tensors; ``dtype``/``device`` options)."""
    import torch

    sp = resolve_space(space)
    tensor_options.setdefault("dtype", torch.float64)
    return [torch.full((len(p.codes),), 1.0 / len(p.codes), **tensor_options) for p in sp.positions]


def one_hot_probabilities(space: StagedSpace | str, encoding: Sequence[int], **tensor_options: Any) -> list[Any]:
    """The probabilities that put all mass on one encoding of ``space`` (validated), one tensor per position."""
    import torch

    sp = resolve_space(space)
    enc = sp.validate(encoding)
    tensor_options.setdefault("dtype", torch.float64)
    out = []
    for p, value in zip(sp.positions, enc):
        v = torch.zeros(len(p.codes), **tensor_options)
        v[list(p.codes).index(value)] = 1.0
        out.append(v)
    return out


__all__ = ["ExpectedLatency", "calibrated_shares", "one_hot_probabilities", "uniform_probabilities"]
