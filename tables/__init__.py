"""Latency tables: the block key, the Parquet schema, LatencyTable and the predictor.

Imports without torch, onnx, TensorRT or CUDA. The key is imported eagerly; the
table, predictor and calibration (pandas, pyarrow) load on first use::

    from tables import LatencyTable, predict, predict_many
"""

from __future__ import annotations

import importlib
from typing import Any

from tables.key import ACTIVATIONS, BLOCK_TYPES, KEY_FIELDS, NUM_CLASSES, BlockKey, chain_keys, parse_key

_LAZY = {
    "LatencyTable": "tables.table",
    "MissingKeysError": "tables.table",
    "CoverageReport": "tables.table",
    "predict": "tables.predictor",
    "predict_many": "tables.predictor",
    "Prediction": "tables.predictor",
    "Calibration": "tables.calibration",
    "accuracy_metrics": "tables.metrics",
    "PartStore": "tables.store",
    "BuildLock": "tables.store",
    "read_table": "tables.schema",
    "write_table": "tables.schema",
    "SCHEMA_VERSION": "tables.schema",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tables' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ACTIVATIONS",
    "BLOCK_TYPES",
    "KEY_FIELDS",
    "NUM_CLASSES",
    "BlockKey",
    "chain_keys",
    "parse_key",
    *_LAZY,
]
