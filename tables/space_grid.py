"""The vectorized half of the predictor: a staged search space resolved into dense latency grids.

:func:`space_lookup` resolves every stage configuration of a staged space
(GPUNet, GENet, a user's) against one table into per-stage grids of what the
stage adds to a network's sum, indexed by a mixed-radix cell number computed
from the encoding with one look-up array and one matrix product.
:meth:`SpaceLookup.sums` then evaluates an (N, L) integer-encoding array with
numpy gathers, no Python loop per architecture, bit for bit equal to
:func:`tables.predictor.predict` (runs of equal consecutive keys are summed as
it sums them). Used by :func:`tables.predictor.predict_many`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tables.key import ACTIVATIONS, BlockKey
from tables.table import LatencyTable, MissingKeysError, as_key

#: Look-up value of an encoding integer outside the space; any grid cell it enters is negative.
_INVALID = -float(1 << 30)
#: Largest grid of one stage (cells); a wider space is refused.
_MAX_CELLS = 1 << 26
#: Encodings handled per step: keeps the temporaries of one step in the CPU cache.
_CHUNK = 4096
#: Rows per matrix product: small enough that BLAS keeps it on the calling thread (threads only slow it).
_MATMUL_ROWS = 512
#: Spaces whose grid key strings are kept (most recent last): those depend on the space alone, not the table.
_MAX_SPACES = 8
_SPACE_MEMO: dict[int, tuple[Any, dict[Any, Any]]] = {}


def _space_memo(space: Any) -> dict[Any, Any]:
    """What :class:`SpaceLookup` derives from ``space`` alone (key strings per stage, merge pairs), kept so
    that a second table, or a second feature of one table, resolves the same space without rebuilding them."""
    entry = _SPACE_MEMO.pop(id(space), None)
    if entry is None or entry[0] is not space:
        entry = (space, {})
        while len(_SPACE_MEMO) >= _MAX_SPACES:
            _SPACE_MEMO.pop(next(iter(_SPACE_MEMO)))
    _SPACE_MEMO[id(space)] = entry
    return entry[1]


@dataclass(eq=False)
class _StageGrid:
    """One stage of a staged space resolved against one table.

    A cell of the stage's grid is a mixed-radix number over the digits (choice
    indices) of resolution, the kernels of the earlier stages that set this
    stage's input size (``kernel_sized_stages``: unpadded stride-2 stages; none in
    a padded space), activation, SE, expansion, kernel, filters, input channels
    and layers, resolution fastest. Resolution and those kernels together are the
    stage's size context. ``first_add`` and ``rest_add`` hold
    what the stage adds to a network's sum, in two steps as :func:`predict`
    adds them: the first layer's latency, then (layers - 1) x the repeated
    layer's; where both are the same key, 0 and then layers x its latency. The
    ``*_lat``/``*_pos`` arrays are per cell without the layers digit (``base``).
    """

    block: str
    n_base: int  # cells without the layers digit
    layer_values: np.ndarray  # layers digit -> layer count
    layers_col: int | None
    optional: bool  # 0 layers is a choice
    has_rest: bool  # 2 or more layers is a choice
    keeps_channels: bool  # cout = cin (no filters)
    filters_col: int | None
    filters_fixed: int
    cin_lut: np.ndarray | None  # channel count -> input-channel digit x stride, where not in the matrix product
    first_add: np.ndarray  # ms per batch; NaN where the table lacks a needed key
    rest_add: np.ndarray
    first_lat: np.ndarray  # per base cell: ms per batch, NaN where the table lacks the key
    first_pos: np.ndarray  # per base cell: position in the table's latency array, -1 where missing
    rest_lat: np.ndarray
    rest_pos: np.ndarray
    first_text: list[str]
    rest_text: list[str]  # per repeated-layer cell (base cells without the input-channel digit, but for keeps)
    watch_first: np.ndarray | None = None  # per cell: first-layer position, or a "no layer" value
    watch_rest: np.ndarray | None = None

    def base_layers(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base cells and layer counts of grid cells."""
        digit, base = np.divmod(cells, self.n_base)
        return base, self.layer_values[digit]


def _size_contexts(sp: Any, si: int) -> tuple[tuple[int, ...], list[tuple[int, dict[int, int] | None]]]:
    """The earlier stages whose kernel sets stage ``si``'s input size, and every (resolution, their kernels).

    The contexts come in grid order: resolution fastest, then those stages' kernel digits in stage order.
    A space without ``kernel_sized_stages`` (or with none before ``si``) has one context per resolution.
    """
    resolutions = sorted(int(r) for r in sp.resolutions)
    sized = getattr(sp, "kernel_sized_stages", None)
    stages = tuple(sized(si)) if sized is not None else ()
    if not stages:
        return (), [(res, None) for res in resolutions]
    choices = [sorted(int(k) for k in sp.stages[c].kernels) for c in stages]
    contexts: list[tuple[int, dict[int, int] | None]] = []
    for ks in itertools.product(*reversed(choices)):  # the last stage's kernel slowest
        for res in resolutions:
            contexts.append((res, dict(zip(stages, reversed(ks)))))
    return stages, contexts


def _grid_texts(
    sp: Any,
    si: int,
    cins: Sequence[int],
    outs: Sequence[int | None],
    combos: Sequence[tuple],
    has_rest: bool,
    contexts: Sequence[tuple[int, dict[int, int] | None]] | None = None,
) -> tuple[list[str], list[str]]:
    """Key strings of every first-layer cell and every repeated-layer cell of stage ``si``.

    Keys come from ``sp.stage_layer_keys``: once per (kernel, expansion, SE,
    activation) and per size context (``contexts``, from :func:`_size_contexts`;
    by default one per resolution) to learn the key's fixed part and feature
    sizes, then formatted per cell. When a stage's keys do not follow that
    pattern (checked on those keys and a few more cells), every cell is built
    through ``stage_layer_keys``.
    """
    layers = 2 if has_rest else 1
    if contexts is None:
        contexts = [(int(r), None) for r in sorted(int(r) for r in sp.resolutions)]
    keeps = outs == [None]

    def keys(ri: int, cin: int, f: int | None, combo: tuple) -> tuple[BlockKey, BlockKey | None]:
        k, e, se, act = combo
        res, kernels = contexts[ri]
        if kernels:
            return sp.stage_layer_keys(si, res, cin, f, k, e, se, act, layers, kernels=kernels)
        return sp.stage_layer_keys(si, res, cin, f, k, e, se, act, layers)

    def cout_of(cin: int, f: int | None) -> int:
        return cin if f is None else f

    def split(key: BlockKey, cin: int, h: int, cout: int) -> str | None:
        # the part of the key string after its shape, when the key has that shape
        head = f"{key.block}_i{key.cin}x{key.h}x{key.w}_o{key.cout}"
        text = str(key)
        if (key.cin, key.h, key.w, key.cout) != (cin, h, h, cout) or not text.startswith(head):
            return None
        return text[len(head) :]

    cin0, f0 = cins[0], outs[0]
    n_ctx = len(contexts)
    hs_first, hs_rest0 = [], []
    for ri in range(n_ctx):
        first, rest = keys(ri, cin0, f0, combos[0])
        hs_first.append(first.h)
        hs_rest0.append(rest.h if rest is not None else 0)
    blocks, tails, rest_hs = [], [], []
    fast = True
    for combo in combos:
        first, rest = keys(0, cin0, f0, combo)
        c0 = cout_of(cin0, f0)
        tail_first = split(first, cin0, hs_first[0], c0)
        tail_rest = split(rest, c0, rest.h, c0) if rest is not None else ""
        if tail_first is None or tail_rest is None:
            fast = False
            break
        blocks.append((first.block, rest.block if rest is not None else ""))
        tails.append((tail_first, tail_rest))
        rest_hs.append(rest.h if rest is not None else 0)
    # the repeated layer's input is the first layer's output: it depends on the stage's kernel when unpadded
    by_combo = len(set(rest_hs)) > 1
    hs_rest = (
        [
            [(r.h if r is not None else 0) for r in (keys(ri, cin0, f0, combo)[1] for ri in range(n_ctx))]
            for combo in combos
        ]
        if fast and by_combo
        else [hs_rest0] * len(combos)
    )

    def fmt(cin: int, f: int | None, ci: int, ri: int) -> tuple[str, str]:
        cout = cout_of(cin, f)
        (bf, br), (tf, tr) = blocks[ci], tails[ci]
        h, oh = hs_first[ri], hs_rest[ci][ri]
        return f"{bf}_i{cin}x{h}x{h}_o{cout}{tf}", (f"{br}_i{cout}x{oh}x{oh}_o{cout}{tr}" if has_rest else "")

    if fast:
        # the learned pattern must rebuild keys at other size contexts, widths and configurations
        checks = [(len(cins) - 1, len(outs) - 1, len(combos) - 1, n_ctx - 1)]
        checks += [(0, 0, 0, ri) for ri in range(n_ctx)]
        checks += [(0, 0, co, n_ctx - 1) for co in range(len(combos))]
        for ci_, fi_, co_, ri_ in checks:
            first, rest = keys(ri_, cins[ci_], outs[fi_], combos[co_])
            want = (str(first), str(rest) if rest is not None else "")
            if fmt(cins[ci_], outs[fi_], co_, ri_) != want:
                fast = False
                break
    firsts: list[str] = []
    rests: list[str] = []
    if fast:
        # the strings of fmt(), cell order (cin, filters, configuration, context), joined from their pieces
        first_parts = [
            (f"{blocks[ci][0]}_i", f"x{hs_first[ri]}x{hs_first[ri]}_o", tails[ci][0])
            for ci in range(len(combos))
            for ri in range(n_ctx)
        ]
        rest_parts = [
            (f"{blocks[ci][1]}_i", f"x{hs_rest[ci][ri]}x{hs_rest[ci][ri]}_o", tails[ci][1])
            for ci in range(len(combos))
            for ri in range(n_ctx)
        ]
        for cin in cins:
            s_in = str(cin)
            for f in outs:
                s_out = str(cout_of(cin, f))
                firsts.extend([f"{a}{s_in}{b}{s_out}{c}" for a, b, c in first_parts])
                if has_rest and (keeps or cin == cins[0]):
                    rests.extend([f"{a}{s_out}{b}{s_out}{c}" for a, b, c in rest_parts])
        return firsts, rests
    for cin in cins:
        for f in outs:
            for combo in combos:
                for ri in range(n_ctx):
                    first, rest = keys(ri, cin, f, combo)
                    firsts.append(str(first))
                    if has_rest and (keeps or cin == cins[0]):
                        rests.append(str(rest) if rest is not None else "")
    return firsts, rests


class SpaceLookup:
    """A staged space resolved against one table: per stage, dense latency grids over its configurations.

    Built once per (table, space) and kept on the table. :meth:`sums` then needs
    no Python loop over encodings. Per block of encodings: one look-up array
    turns every value into its digit (:data:`_INVALID` for a value outside the
    space); one matrix product with the stages' strides gives each stage's grid
    cell; per stage two gathers give what the stage adds to the sum.
    """

    def __init__(self, table: LatencyTable, space: Any, values: np.ndarray | None = None) -> None:
        self.table = table
        self.space = space
        sp = space
        positions = list(sp.positions)
        self.length = n_cols = len(positions)
        self.name = str(getattr(sp, "name", "space"))
        self.in_channels = int(getattr(sp, "in_channels", 3))
        scale = int(getattr(sp, "expansion_scale", 1))
        col = {(p.stage, p.field): p.index for p in positions[1:]}
        codes_of = {p.index: sorted(int(c) for c in p.codes) for p in positions}
        if min(c[0] for c in codes_of.values()) < 0:
            raise ValueError(f"search space {self.name} has negative codes; use predict() per architecture")
        # one look-up array: value v of column j sits at j * width + v and holds v's digit
        self.width = width = max(c[-1] for c in codes_of.values()) + 1
        lut = np.full(n_cols * width, _INVALID, dtype=np.float64)
        for j, codes in codes_of.items():
            lut[j * width + np.asarray(codes, dtype=np.intp)] = np.arange(len(codes))
        resolutions = sorted(int(r) for r in sp.resolutions)
        index = table.key_index
        latency = table.block_array if values is None else values  # what is summed: block latencies, or a feature
        # a complex feature carries two sums through one pass (real part: the latencies, bit for bit as alone)
        self.dtype = np.result_type(latency, np.float64)
        weights = np.zeros((len(sp.stages), n_cols), dtype=np.float64)
        self.stages: list[_StageGrid] = []
        cins: list[int] = [self.in_channels]
        memo = _space_memo(sp)
        largest = 0
        for si, st in enumerate(sp.stages):
            acts = sorted(ACTIVATIONS.index(a) for a in st.acts)
            ses = sorted(int(s) for s in st.se)
            exps = sorted(round(float(e) * scale) for e in st.expansions)
            kernels = sorted(int(k) for k in st.kernels)
            keeps = st.filters is None
            outs: list[int | None] = [None] if keeps else sorted(int(f) for f in st.filters)
            layers = sorted(int(n) for n in st.layers)
            has_rest = layers[-1] >= 2
            sized, contexts = _size_contexts(sp, si)
            stride: dict[str, int] = {}
            size = 1
            for name, n in (
                ("resolution", len(resolutions)),
                *((f"kernel of {c}", len(sp.stages[c].kernels)) for c in sized),
                ("act", len(acts)),
                ("se", len(ses)),
                ("expansion", len(exps)),
                ("kernel", len(kernels)),
                ("filters", len(outs)),
                ("cin", len(cins)),
                ("layers", len(layers)),
            ):
                stride[name] = size
                size *= n
            n_base = stride["layers"]
            largest = max(largest, size)
            if size > _MAX_CELLS:
                raise ValueError(
                    f"search space {self.name} is too wide for predict_many ({size} configurations in "
                    f"{getattr(st, 'name', f'stage {si}')}); use predict() per architecture"
                )
            weights[si, 0] = stride["resolution"]
            for c in sized:  # an earlier stage's kernel digit is part of this stage's size context
                if (c, "kernel") in col:
                    weights[si, col[(c, "kernel")]] += stride[f"kernel of {c}"]
            for f in ("act", "se", "expansion", "kernel", "filters", "layers"):
                if (si, f) in col:
                    weights[si, col[(si, f)]] = stride[f]
            source = self._channel_source(sp.stages, si, col)
            cin_lut = None
            if len(cins) > 1:
                if source[0] == "column" and codes_of[source[1]] == cins:
                    weights[si, source[1]] += stride["cin"]  # the source's digit is this stage's cin digit
                else:
                    cin_lut = np.zeros(max(cins) + 1, dtype=np.intp)
                    cin_lut[cins] = np.arange(len(cins), dtype=np.intp) * stride["cin"]
            combos = [(k, e / scale, s, a) for k in kernels for e in exps for s in ses for a in acts]
            if si not in memo:
                firsts, rests = _grid_texts(sp, si, cins, outs, combos, has_rest, contexts)
                memo[si] = (firsts, rests, self._same(firsts, rests, n_base))
            firsts, rests, same = memo[si]
            self.stages.append(
                _StageGrid(
                    block=st.block,
                    n_base=n_base,
                    layer_values=np.asarray(layers, dtype=np.int64),
                    layers_col=col.get((si, "layers")),
                    optional=layers[0] == 0,
                    has_rest=has_rest,
                    keeps_channels=keeps,
                    filters_col=col.get((si, "filters")),
                    filters_fixed=0 if keeps else int(outs[0]),  # type: ignore[arg-type]
                    cin_lut=cin_lut,
                    **self._grid(firsts, rests, same, index, latency, n_base, layers),
                )
            )
            out_set = set(cins) if keeps else {int(f) for f in outs}  # type: ignore[arg-type]
            cins = sorted(out_set | (set(cins) if layers[0] == 0 else set()))
        # cell indices are sums of whole numbers below 2**24: exact in float32, which halves the work
        dtype = np.float32 if largest < (1 << 24) else np.float64
        self.lut = lut.astype(dtype)
        self.weights = weights.astype(dtype)
        self._offsets = np.zeros(0, dtype=np.intp)
        if "pairs" not in memo:
            memo["pairs"] = self._merge_pairs(len(resolutions))
        self.pairs = memo["pairs"]
        for si, part in {s for pair in self.pairs for s in pair}:
            g = self.stages[si]
            self._watch(si, g, part)

    @staticmethod
    def _channel_source(stages: Sequence[Any], si: int, col: Mapping[tuple[int, str], int]) -> tuple[str, int]:
        # which encoding column holds the input channels of stage si in every network
        c = si - 1
        while c >= 0 and stages[c].filters is None:
            c -= 1  # a stage that keeps its width passes it on
        if c < 0:
            return ("fixed", 0)
        if min(stages[c].layers) == 0:
            return ("mixed", 0)
        if (c, "filters") in col:
            return ("column", col[(c, "filters")])
        return ("fixed", 0)

    @staticmethod
    def _same(firsts: list[str], rests: list[str], n_base: int) -> np.ndarray:
        """Per base cell: whether the first and the repeated layer are one key."""
        if not rests:
            return np.zeros(n_base, dtype=bool)
        return np.asarray(firsts) == np.asarray(rests)[np.arange(n_base) % len(rests)]

    @staticmethod
    def _grid(
        firsts: list[str],
        rests: list[str],
        same: np.ndarray,
        index: Mapping[str, int],
        latency: np.ndarray,
        n_base: int,
        layers: list[int],
    ) -> dict[str, Any]:
        """Per-cell additions, latencies, positions and key strings of one stage."""
        first_pos = np.array([index.get(t, -1) for t in firsts], dtype=np.intp)
        first_lat = np.where(first_pos >= 0, latency[np.maximum(first_pos, 0)], np.nan)
        if rests:
            rest_of = np.arange(n_base) % len(rests)
            rest_pos = np.array([index.get(t, -1) for t in rests], dtype=np.intp)[rest_of]
        else:
            rest_pos = np.full(n_base, -1, dtype=np.intp)
        rest_lat = np.where(rest_pos >= 0, latency[np.maximum(rest_pos, 0)], np.nan)
        first_add = np.zeros(n_base * len(layers), dtype=first_lat.dtype)
        rest_add = np.zeros(n_base * len(layers), dtype=first_lat.dtype)
        for i, n in enumerate(layers):
            cells = slice(i * n_base, (i + 1) * n_base)
            if n == 1:
                first_add[cells] = first_lat
            elif n >= 2:
                first_add[cells] = np.where(same, 0.0, first_lat)
                rest_add[cells] = ((n - 1) + same.astype(np.float64)) * rest_lat
        return {
            "first_add": first_add,
            "rest_add": rest_add,
            "first_lat": first_lat,
            "first_pos": first_pos,
            "rest_lat": rest_lat,
            "rest_pos": rest_pos,
            "first_text": firsts,
            "rest_text": rests,
        }

    @staticmethod
    def _watch(si: int, g: _StageGrid, part: int) -> None:
        # per cell: the layer's table position, or a value of its own where the network has no such layer
        n_layers = len(g.layer_values)
        pos = np.tile(g.rest_pos if part else g.first_pos, n_layers).astype(np.int32)
        absent = np.repeat(g.layer_values < (2 if part else 1), g.n_base)
        pos[absent | (pos < 0)] = -2 - 2 * si - part
        if part:
            g.watch_rest = pos
        else:
            g.watch_first = pos

    def _merge_pairs(self, n_res: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        # (stage, 0 first / 1 repeated) layer slots whose keys can be equal while adjacent in a network
        # (same resolution); a stage's own first and repeated layers are handled by its cells
        slots = [(si, r) for si, g in enumerate(self.stages) for r in ((0, 1) if g.has_rest else (0,))]
        texts = {
            s: {
                (i % n_res, t)
                for i, t in enumerate(self.stages[s[0]].rest_text if s[1] else self.stages[s[0]].first_text)
            }
            for s in slots
        }
        optional = {s: int(self.stages[s[0]].layer_values[0]) < (2 if s[1] else 1) for s in slots}
        pairs = []
        for u, su in enumerate(slots):
            for t in range(u - 1, -1, -1):
                st = slots[t]
                if not (st[0] == su[0] and st[1] == 0 and su[1] == 1) and texts[st] & texts[su]:
                    pairs.append((st, su))
                if not optional[st]:
                    break
        return pairs

    # ----- evaluation ------------------------------------------------------------
    def sums(
        self, arr: np.ndarray, want_blocks: bool, want_types: bool
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray] | None]:
        """Raw block sums (ms per batch), blocks per network and per-type sums of (N, L) integer encodings."""
        n = arr.shape[0]
        total = np.empty(n, dtype=self.dtype)
        n_blocks = np.zeros(n, dtype=np.int64) if want_blocks else None
        types = {g.block: np.zeros(n, dtype=self.dtype) for g in self.stages} if want_types else None
        missing: dict[str, None] = {}
        step = min(_CHUNK, max(n, 1))
        if len(self._offsets) < step * self.length:
            self._offsets = np.tile(np.arange(self.length, dtype=np.intp) * self.width, step)
        merged: list[np.ndarray] = []
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows = self._chunk(
                self._rows(arr, start, stop),
                total[start:stop],
                n_blocks[start:stop] if n_blocks is not None else None,
                {b: v[start:stop] for b, v in types.items()} if types is not None else None,
                missing,
            )
            if rows is None:
                self.space.validate_many(arr)  # names the first bad row and position
                raise ValueError(f"invalid {self.name} encodings: a value is outside the space")
            merged.append(rows + start)
        rows = np.concatenate(merged) if merged else np.zeros(0, dtype=np.intp)
        # rows where a stage's layers continue a run of the same key: summed run by run, all together
        for start in range(0, len(rows), step):
            some = rows[start : start + step]
            exact = np.empty(len(some), dtype=self.dtype)
            self._chunk(self._rows(arr[some], 0, len(some)), exact, None, None, missing, exact=True)
            total[some] = exact
        if missing:
            raise MissingKeysError([as_key(k) for k in missing], self.table.identity)
        return total, n_blocks, types

    @staticmethod
    def _rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
        x = arr[start:stop]
        if x.dtype != np.int64 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.int64)
        return x

    def _channels(self, x: np.ndarray, si: int) -> np.ndarray | int:
        """Input channels of stage ``si`` per encoding (values)."""
        c = si - 1
        while c >= 0 and self.stages[c].keeps_channels:
            c -= 1
        if c < 0:
            return self.in_channels
        g = self.stages[c]
        cout = x[:, g.filters_col] if g.filters_col is not None else g.filters_fixed
        if not g.optional:
            return cout
        present = x[:, g.layers_col] > 0 if g.layers_col is not None else False
        return np.where(present, cout, self._channels(x, c))

    def _chunk(
        self,
        x: np.ndarray,
        total: np.ndarray,
        n_blocks: np.ndarray | None,
        types: dict[str, np.ndarray] | None,
        missing: dict[str, None],
        exact: bool = False,
    ) -> np.ndarray | None:
        """Sums of one block of encodings into ``total``; ``None`` when a value is outside the space.

        Returns the rows whose sum needs :meth:`_runs` (equal keys across a stage
        boundary), or, with ``exact``, sums every row that way. Keys the table
        lacks go to ``missing``.
        """
        m = x.shape[0]
        flat = x.reshape(-1)
        if flat.min() < 0 or flat.max() >= self.width:
            return None
        digits = self.lut.take(flat + self._offsets[: len(flat)], mode="clip").reshape(m, self.length)
        sums = np.empty((len(self.stages), m), dtype=self.weights.dtype)  # each stage's grid cell
        for i in range(0, m, _MATMUL_ROWS):
            np.matmul(self.weights, digits[i : i + _MATMUL_ROWS].T, out=sums[:, i : i + _MATMUL_ROWS])
        if sums.min() < 0:
            return None
        cells = sums.astype(np.intp)
        for si, g in enumerate(self.stages):
            if g.cin_lut is not None:
                cells[si] += g.cin_lut.take(self._channels(x, si))
        total[:] = 0.0
        for si, g in enumerate(self.stages):
            a = g.first_add.take(cells[si])
            total += a
            if g.has_rest:
                b = g.rest_add.take(cells[si])
                total += b
                if types is not None:
                    types[g.block] += a + b
            elif types is not None:
                types[g.block] += a
            if n_blocks is not None:
                n_blocks += x[:, g.layers_col] if g.layers_col is not None else int(g.layer_values[0])
        if exact:
            rows = np.arange(m)
            total[:] = self._runs(cells, rows)
        elif self.pairs:
            flags = np.zeros(m, dtype=bool)
            for (s1, p1), (s2, p2) in self.pairs:
                w1 = self.stages[s1].watch_rest if p1 else self.stages[s1].watch_first
                w2 = self.stages[s2].watch_rest if p2 else self.stages[s2].watch_first
                flags |= w1.take(cells[s1]) == w2.take(cells[s2])  # type: ignore[union-attr]
            rows = np.flatnonzero(flags)
        else:
            rows = np.zeros(0, dtype=np.intp)
        if np.isnan(total).any():
            self._collect_missing(cells, np.flatnonzero(np.isnan(total)), missing)
        return rows

    def _runs(self, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # the exact sum of predict(): each run of equal consecutive keys adds count x latency, in order
        k = len(rows)
        total = np.zeros(k, dtype=self.dtype)
        run_pos = np.full(k, -(1 << 30), dtype=np.intp)
        run_lat = np.zeros(k, dtype=self.dtype)
        run_cnt = np.zeros(k, dtype=np.float64)
        for si, g in enumerate(self.stages):
            base, lay = g.base_layers(cells[si][rows])
            slots = [(g.first_pos.take(base), g.first_lat.take(base), np.ones(k), lay > 0)]
            if g.has_rest:
                slots.append((g.rest_pos.take(base), g.rest_lat.take(base), lay - 1.0, lay > 1))
            for pos, lat, cnt, present in slots:
                same = present & (pos == run_pos)
                new = present & ~same
                total = np.where(new, total + run_cnt * run_lat, total)
                run_cnt = np.where(same, run_cnt + cnt, np.where(new, cnt, run_cnt))
                run_lat = np.where(new, lat, run_lat)
                run_pos = np.where(new, pos, run_pos)
        return total + run_cnt * run_lat

    def _collect_missing(self, cells: np.ndarray, rows: np.ndarray, missing: dict[str, None]) -> None:
        for si, g in enumerate(self.stages):
            base, lay = g.base_layers(np.unique(cells[si][rows]))
            for pos, texts, needed in ((g.first_pos, g.first_text, lay > 0), (g.rest_pos, g.rest_text, lay > 1)):
                for cell in np.unique(base[needed & (pos.take(base) == -1)]).tolist():
                    missing.setdefault(texts[cell % len(texts)], None)


def space_lookup(table: LatencyTable, space: Any, feature: str = "latency") -> SpaceLookup:
    """The :class:`SpaceLookup` of ``space`` against ``table`` summing ``feature``: ``latency`` (the blocks'
    :attr:`~tables.table.LatencyTable.block_array`), ``io``, ``est`` (1 per estimated key), or
    ``latency+sigma`` / ``latency+io`` (complex: the latencies as the real part, the spreads or the block I/O
    as the imaginary part, one pass for both)."""
    # kept on the table: a NAS loop calls predict_many many times with one table and space
    cache = table.__dict__.setdefault("_space_lookups", {})
    entry = cache.get((id(space), feature))
    if entry is None or entry.space is not space:
        values = {
            "latency": lambda: None,
            "io": lambda: table.io_array,
            "est": lambda: table.estimated_mask.astype(np.float64),
            # the latencies and their spreads in one pass: real and imaginary parts of one gather
            "latency+sigma": lambda: table.block_array + 1j * table.sigma_array,
            "latency+io": lambda: table.block_array + 1j * table.io_array,
        }[feature]()
        entry = cache[(id(space), feature)] = SpaceLookup(table, space, values)
    return entry


__all__ = ["SpaceLookup", "space_lookup"]
