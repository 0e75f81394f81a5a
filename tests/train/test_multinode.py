"""Multi-node training as documented (torchrun --nnodes): 2 "nodes" of 1 CPU process each, over gloo on this machine,
reach the same weights as 2 processes on one node (this also covers single-node DDP: both runs have 2 ranks in
sync)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tiny import TINY_CLI, write_cases


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(data, out, launcher: list[str]) -> list[str]:
    args = ["-m", "brainuad", "train", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "1"]
    return [sys.executable, "-m", "torch.distributed.run", *launcher, *args, *TINY_CLI, "--augment", "off"]


@pytest.mark.slow
def test_two_nodes_over_gloo_reach_the_weights_of_one_two_process_node(tmp_path):
    data = write_cases(tmp_path / "data", 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.Popen(
        _train(data, tmp_path / "one-node", ["--standalone", "--nproc_per_node=2"]), env=env, stderr=subprocess.PIPE
    )
    node = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    nodes = [
        subprocess.Popen(
            _train(
                data,
                tmp_path / "two-nodes",
                [*node, f"--node_rank={rank}"],
            ),
            env=env,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    errors = [job.communicate(timeout=600)[1].decode()[-2000:] for job in [single, *nodes]]
    assert [job.returncode for job in [single, *nodes]] == [0, 0, 0], errors
    for run in ("one-node", "two-nodes"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["ddp_ranks_in_sync"] is True
    one, two = (load_file(str(tmp_path / run / "last.safetensors")) for run in ("one-node", "two-nodes"))
    assert one.keys() == two.keys() and all((one[k] == two[k]).all() for k in one)
