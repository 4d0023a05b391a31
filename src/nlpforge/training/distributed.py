"""Data parallelism over processes and machines: torchrun launch, process groups, sharding.

`nlpforge train ... --nproc 2` writes its settings to a file and re-launches the training entry
point under `torch.distributed.run` (torchrun); each rank then trains on its slice of every
global batch, DistributedDataParallel averages the gradients, and only rank 0 writes checkpoints
and artifacts. gloo on CPU, NCCL on CUDA.

    python -m torch.distributed.run --nproc-per-node 2 -m nlpforge.training.run settings.json
"""
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device_type: str) -> World:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not under_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch_indices: list[int], world: World) -> list[int]:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    if not world.distributed:
        return batch_indices
    base, extra = divmod(len(batch_indices), world.size)
    start = world.rank * base + min(world.rank, extra)
    return batch_indices[start:start + base + (1 if world.rank < extra else 0)]


def all_sum(values: list[float], world: World) -> list[float]:
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value, world: World) -> list:
    if not world.distributed:
        return [value]
    out = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def launch(program: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
           master_addr: str = "127.0.0.1", master_port: int = 29500) -> int:
    """Run `python <program>` (e.g. ["-m", "nlpforge.training.run", "settings.json"]) under torchrun
    with `nproc` processes per node; returns its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
               f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}",
               *program]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))))
    return subprocess.call(command, env=env)
