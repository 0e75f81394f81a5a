"""--shard K/N: a fixed partition of a batch (disjoint, covering, balanced), taken from SLURM array variables too."""

import pytest

from brainuad.cli import build_parser
from brainuad.errors import ConfigError
from brainuad.io.shards import Shard, parse_shard


def test_shards_partition_the_batch_by_output_name():
    names = {f"/in/{n}.nii.gz": n for n in ["g", "a", "f", "b", "e", "c", "d"]}
    shards = [Shard(k, 3).take(names) for k in range(3)]
    assert [names[p] for p in shards[0]] == ["a", "d", "g"]
    assert sorted(p for s in shards for p in s) == sorted(names) and [len(s) for s in shards] == [3, 2, 2]


def test_shard_from_flag_or_slurm_array():
    assert parse_shard("2/5", {}) == Shard(2, 5)
    assert parse_shard(None, {}) is None
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"}
    assert parse_shard(None, slurm) == Shard(2, 4)  # --array=5-8: the third task
    assert parse_shard("0/2", slurm) == Shard(0, 2)  # the flag wins
    for bad in ["3/3", "1", "-1/2", "a/b", "0/0"]:
        with pytest.raises(ConfigError, match="K < N"):
            parse_shard(bad, {})
    with pytest.raises(ConfigError, match="SLURM"):
        parse_shard(None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})


@pytest.mark.parametrize(
    "verb", [["preprocess", "a.nii.gz", "--out", "o"], ["detect", "a.nii.gz", "--model", "m", "--out", "o"]]
)
def test_batch_verbs_take_a_shard(verb):
    assert build_parser(methods=False).parse_args([*verb, "--shard", "1/4"]).shard == "1/4"
