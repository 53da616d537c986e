"""The command line of one node of a multi-node job (torchrun's c10d rendezvous)."""

from __future__ import annotations

from pathlib import Path

from livt_service.slots import Slot
from livt_service.state import ClaimedJob
from worker.gang import gang_command

JOB = ClaimedJob(
    id="j_x",
    kind="pretrain",
    attempt=3,
    config={},
    gpus=4,
    queue="gpu",
    artifact_dir="/shared/j_x",
    worker_id="a@h",
)


def _flags(rank: int) -> list[str]:
    slot = Slot("j_x", 3, rank, 2, "w@h", f"10.0.0.{rank + 1}:{29400 + rank}")
    return gang_command(JOB, Path("/shared/j_x"), 4, slot, "10.0.0.1:29400", join_timeout=90)


def test_every_node_joins_node_0s_rendezvous_with_its_own_rank_and_address() -> None:
    for rank in (0, 1):
        argv = _flags(rank)
        assert argv[1:3] == ["-m", "torch.distributed.run"]
        assert "--standalone" not in argv
        for flag in (
            "--nnodes=2",
            f"--node_rank={rank}",
            "--nproc_per_node=4",
            "--rdzv_backend=c10d",
            "--rdzv_endpoint=10.0.0.1:29400",
            "--rdzv_id=j_x-3",
            f"--local_addr=10.0.0.{rank + 1}",
            f"--rdzv_conf=is_host={1 if rank == 0 else 0},join_timeout=90",
            "--max_restarts=0",
        ):
            assert flag in argv, (flag, argv)
        train = argv[argv.index("livt_core") - 1 :]
        assert train[:4] == ["-m", "livt_core", "train", "pretrain"]
        assert train[train.index("--attempt") + 1] == "3"
