"""Latency tables: the block key, the Parquet schema, LatencyTable and the predictor.

Imports without torch, onnx, TensorRT or CUDA.
"""

from tables.key import ACTIVATIONS, BLOCK_TYPES, KEY_FIELDS, NUM_CLASSES, BlockKey, chain_keys, parse_key

__all__ = ["ACTIVATIONS", "BLOCK_TYPES", "KEY_FIELDS", "NUM_CLASSES", "BlockKey", "chain_keys", "parse_key"]
