"""The shard split: stable, complete, disjoint; `--shard I/N` on the build command line."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler import build
from profiler.sharding import parse_shard, select_shard, shard_metadata, shard_of, shard_table_name
from tables.key import BlockKey

KEY_STRINGS = st.builds(
    lambda cin, hw, cout, k, s, e: str(BlockKey("irb", cin, hw, hw, cout, k=k, s=s, e=e)),
    st.integers(1, 512),
    st.integers(2, 64),
    st.integers(1, 512),
    st.sampled_from([1, 3, 5, 7]),
    st.sampled_from([1, 2]),
    st.sampled_from([1, 2, 3, 4, 6]),
)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(KEY_STRINGS, unique=True, max_size=60), count=st.integers(1, 12))
def test_the_shards_are_complete_and_pairwise_disjoint(keys, count):
    shards = [select_shard(keys, i, count) for i in range(1, count + 1)]
    assert sorted(k for shard in shards for k in shard) == sorted(keys)
    assert sum(len(s) for s in shards) == len(keys)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(KEY_STRINGS, unique=True, max_size=60), count=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_a_key_lands_in_the_same_shard_whatever_the_input_order_and_company(keys, count, seed):
    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    alone = {k: next(i for i in range(1, count + 1) if select_shard([k], i, count)) for k in keys}
    for i in range(1, count + 1):
        assert set(select_shard(shuffled, i, count)) == {k for k in keys if alone[k] == i}


def test_the_split_is_pinned_to_sha1_of_the_canonical_key_string():
    # sha1("irb_i8x16x16_o8_k5_s1_e2_se0_relu") mod 4 + 1: changing the hash would reshuffle running campaigns
    key = BlockKey("irb", 8, 16, 16, 8, k=5, s=1, e=2)
    expected = int(hashlib.sha1(str(key).encode()).hexdigest(), 16) % 4 + 1
    assert shard_of(key, 4) == shard_of(str(key), 4) == expected


def test_a_shard_keeps_the_input_order():
    keys = [f"k{i}" for i in range(40)]
    shard = select_shard(keys, 2, 3)
    assert shard == [k for k in keys if k in set(shard)]


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("3/8", (3, 8)), (" 2 / 4 ", (2, 4))])
def test_shard_specifications_are_one_based_i_of_n(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("0/4", "from 1 to 4"), ("5/4", "from 1 to 4"), ("2", "I/N"), ("1/0", "at least 1")]
)
def test_a_bad_shard_specification_names_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


def test_a_shard_table_is_named_after_the_table_and_the_shard():
    assert shard_table_name("a100_tensorrt_fp16_b64.parquet", 3, 8) == "a100_tensorrt_fp16_b64.shard-3-of-8.parquet"
    assert shard_metadata(3, 8)["index"] == 3 and shard_metadata(3, 8)["count"] == 8


def test_a_bad_shard_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    code = build.main(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--shard", "5/4", "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard 5/4" in err[0]


def test_dry_run_of_a_shard_counts_only_its_keys(capsys):
    assert (
        build.main(["--device", "cpu", "--batch", "1", "--networks", "resnet-18", "--shard", "2/3", "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert "shard 2/3:" in out and "shard-2-of-3.parquet" in out
