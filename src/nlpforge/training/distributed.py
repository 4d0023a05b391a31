"""Data parallelism over processes and machines: torchrun launch, process groups, sharding.

`nlpforge train ... --nproc 2` writes its settings to a file and re-launches the training entry
point under `torch.distributed.run` (torchrun); each rank then trains on its slice of every
global batch, DistributedDataParallel averages the gradients, and only rank 0 writes checkpoints
and artifacts. gloo on CPU, NCCL on CUDA.

    python -m nlpforge.training.distributed --nproc-per-node 2 -m nlpforge.training.run settings.json

`python -m nlpforge.training.distributed` takes torchrun's arguments and runs torchrun with its
rendezvous store bound to --master-addr (loopback by default) rather than to every interface, and
without restarts after a rank's user error (a bad file or setting), which a restart would only repeat.
"""
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from nlpforge.settings import cores


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


def restart_count() -> int:
    """How many times torchrun has restarted this job's processes (0 on the first run)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def setup(device_type: str) -> World:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not under_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if world.size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            dist.init_process_group(backend, store=attempt_store(world), rank=world.rank, world_size=world.size)
        else:
            dist.init_process_group(backend)
    return world


def attempt_store(world: World):
    """torchrun's store, under a prefix of its own for each restart.

    With a fixed rendezvous (--nnodes N, --master-addr) torchrun keeps one store across restarts, so the
    processes of a restart would find the addresses their dead predecessors published there, and wait on
    them for ever. Each restart's process group keeps its keys apart.
    """
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world.size, is_master=False)
    return dist.PrefixStore(f"nlpforge/attempt-{restart_count()}", store)


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
           master_addr: str = "127.0.0.1", master_port: int = 29500, max_restarts: int = 0) -> int:
    """Run `python <program>` (e.g. ["-m", "nlpforge.training.run", "settings.json"]) under torchrun
    with `nproc` processes per node, restarted up to `max_restarts` times when one fails; returns its exit
    code. The rendezvous store listens on `master_addr` only (see `torchrun`)."""
    command = [sys.executable, "-m", "nlpforge.training.distributed", f"--nproc-per-node={nproc}",
               f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={master_addr}",
               f"--master-port={master_port}", f"--max-restarts={max_restarts}", *program]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, cores() // nproc))))
    loopback = _loopback_interface()
    if nnodes == 1 and loopback and _is_loopback(master_addr):
        # gloo and NCCL listen on the address the host name resolves to unless told an interface.
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
        env.setdefault("NCCL_SOCKET_IFNAME", loopback)
    return subprocess.call(command, env=env)


def _is_loopback(address: str) -> bool:
    try:
        return address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _loopback_interface() -> str | None:
    names = {name for _, name in socket.if_nameindex()}
    return next((name for name in ("lo", "lo0") if name in names), None)


AGENT = "NLPFORGE_TORCHRUN_AGENT"  # the pid of nlpforge's torchrun, for its ranks
EXIT_FILE = "NLPFORGE_TORCHRUN_EXIT"  # where a rank that gives up leaves its exit code
GIVE_UP = signal.SIGUSR2


class _RankGaveUp(Exception):
    """A rank failed on a user error: restarting the ranks would fail the same way."""


def stop_restarts(exit_code: int, message: str | None = None) -> None:
    """Called by a rank that fails on a user error: nlpforge's torchrun stops its ranks, restarts none, and exits
    with `exit_code`. `message` (the error's one line) is printed by the first rank to give up only: the others
    fail on the same file or setting and would repeat it."""
    agent = os.environ.get(AGENT)
    if not (agent and agent.isdigit() and os.getppid() == int(agent)):
        if message:
            print(message, file=sys.stderr)
        return
    first = True
    if os.environ.get(EXIT_FILE):
        try:  # created by one rank only: the first
            handle = os.open(os.environ[EXIT_FILE], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.write(handle, str(exit_code).encode())
            os.close(handle)
        except FileExistsError:
            first = False
        except OSError:
            pass
    if message and first:
        print(message, file=sys.stderr, flush=True)  # before the signal: the agent then stops this rank
    elif not first:
        time.sleep(1)  # the first rank's signal stops this one; else its line is printed by now
    os.kill(int(agent), GIVE_UP)


def _give_up(signum, frame):
    signal.signal(GIVE_UP, signal.SIG_IGN)  # once: the other ranks may give up at the same moment
    # The rank has printed the one line that matters; torchrun's notes on stopping the others would bury it.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    raise _RankGaveUp


def torchrun(argv: list[str]) -> None:
    """torchrun whose rendezvous store listens on --master-addr only.

    torchrun's agent on node 0 starts a TCPStore server, which binds every interface (*:PORT) whatever
    --master-addr says. A multi-tenant TCPStore started first on a socket bound to the address is
    reused by the agent's own, so that one is the only listener.
    """
    from torch.distributed.run import main, parse_args

    args, stores = parse_args(argv), []
    if args.node_rank == 0:
        try:
            family = socket.AF_INET6 if ":" in args.master_addr else socket.AF_INET  # ::1 is this machine too
            listener = socket.create_server((args.master_addr, args.master_port), family=family)
        except OSError as error:
            print(f"error: cannot listen on --master-addr {args.master_addr} --master-port {args.master_port} "
                  f"({error.strerror or error}); choose a free port or an address of this machine", file=sys.stderr)
            sys.exit(2)
        # Kept until torchrun returns: the agent's own store shares this server.
        stores.append(dist.TCPStore(args.master_addr, args.master_port, is_master=True, multi_tenant=True,
                                    master_listen_fd=listener.fileno(), wait_for_workers=False))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    exit_file = Path(tempfile.mkdtemp(prefix="nlpforge-torchrun-")) / "exit-code"
    os.environ.update({AGENT: str(os.getpid()), EXIT_FILE: str(exit_file)})
    signal.signal(GIVE_UP, _give_up)  # raised in torchrun's loop, whose exit stops the ranks
    try:
        main(argv)
    except ChildFailedError as error:  # the ranks said why; torchrun's own traceback would bury it
        failure = next(iter(error.failures.values()), None)
        sys.exit(failure.exitcode if failure is not None and failure.exitcode > 0 else 1)
    except _RankGaveUp:  # the rank printed its error, and left its exit code
        code = exit_file.read_text().strip() if exit_file.exists() else ""
        sys.exit(int(code) if code.isdigit() else 2)
    finally:
        shutil.rmtree(exit_file.parent, ignore_errors=True)


if __name__ == "__main__":
    torchrun(sys.argv[1:])
