"""A job's hosts on other machines, reached over SSH: one torchrun node per host.

    est = PyTorch(entry_point="train.py", instance_count=2, ssh_hosts=["gpu-1", "ubuntu@gpu-2"])
    NLPFORGE_SSH_HOSTS=gpu-1,gpu-2 python notebook.py      # the same, with the notebook unchanged

Host algo-N runs on the N-th SSH destination as node N-1 of a static torchrun rendezvous whose master is
the first destination's address (as `ssh -G` resolves it, so aliases from ~/.ssh/config work). Each
client is started with `ssh -tt`, so that closing it (a stop, max_run, a failing peer) hangs up the
remote side and torchrun ends its workers there.

What every host needs, as on any cluster without a scheduler:
- the job folder at the same path (a shared file system such as NFS: the job's code, channels, config
  and model folders are read and written there);
- the same Python at the same path, with nlpforge installed;
- key-based SSH from this machine (BatchMode: a password prompt would hang the job).

NLPFORGE_SSH_OPTIONS adds options to every ssh call (e.g. "-F cluster_ssh_config"); NLPFORGE_MASTER_PORT
fixes the rendezvous port (default: one free here, which on a cluster is the first host's port too
only by chance, so set it there).
"""
import os
import shlex
import signal
import socket
import subprocess

from nlpforge.errors import ConfigError

# What the script needs from this process's environment besides the job's own variables.
PASSED_ON = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
             "OMP_NUM_THREADS", "NLPFORGE_TRACKING", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def ssh_hosts(hosts, instance_count: int) -> list[str]:
    """The SSH destinations of a job: `hosts` or NLPFORGE_SSH_HOSTS, one per instance, or [] to run here."""
    if hosts is None:
        hosts = [h.strip() for h in os.environ.get("NLPFORGE_SSH_HOSTS", "").split(",") if h.strip()]
    elif isinstance(hosts, str):
        raise ConfigError("ssh_hosts must be a list of SSH destinations, such as ['gpu-1', 'ubuntu@gpu-2']")
    hosts = [str(h) for h in hosts]
    if hosts and len(hosts) != instance_count:
        raise ConfigError(f"{len(hosts)} SSH host(s) for instance_count={instance_count}; give one destination "
                          "per instance (ssh_hosts or NLPFORGE_SSH_HOSTS)")
    for host in hosts:
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ConfigError(f"SSH host {host!r} is not a destination; give [user@]host or ssh://[user@]host[:port]")
    return hosts


def ssh_options() -> list[str]:
    return ["-o", "BatchMode=yes", *shlex.split(os.environ.get("NLPFORGE_SSH_OPTIONS", ""))]


def address_of(destination: str) -> str:
    """The host name or address ssh connects to for `destination` (its config's HostName applied)."""
    try:
        done = subprocess.run(["ssh", *ssh_options(), "-G", destination], capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise ConfigError("ssh is not installed here; install OpenSSH's client to run a job on other "
                          "machines") from None
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "hostname" and value:
            return value
    raise ConfigError(f"ssh cannot resolve host {destination!r}: {done.stderr.strip() or 'no hostname'}")


def master_port() -> int:
    if os.environ.get("NLPFORGE_MASTER_PORT"):
        return int(os.environ["NLPFORGE_MASTER_PORT"])
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def host_commands(destinations: list[str], program: list[str], cwd: str, env: dict) -> list[list[str]]:
    """One ssh command per host: torchrun node i of len(destinations), running `program` (host_entry and the
    script) in `cwd` with `env` on top of the remote login's environment."""
    master, port = address_of(destinations[0]), master_port()
    exports = dict(env)
    exports.update({k: os.environ[k] for k in PASSED_ON if k in os.environ and k not in exports})
    commands = []
    for rank, destination in enumerate(destinations):
        torchrun = [program[0], "-m", "torch.distributed.run", "--nnodes", str(len(destinations)),
                    "--node-rank", str(rank), "--nproc-per-node", "1", "--master-addr", master,
                    "--master-port", str(port), *program[1:]]
        remote = " ".join([f"cd {shlex.quote(cwd)} &&", "exec env",
                           *(shlex.quote(f"{k}={v}") for k, v in sorted(exports.items())),
                           *map(shlex.quote, torchrun)])
        commands.append(["ssh", "-tt", *ssh_options(), destination, remote])
    return commands


class HostProcesses:
    """The ssh clients of a job, one per host, watched as one process: it has ended when every client has,
    and the first host that fails ends the others."""

    def __init__(self, commands: list[list[str]], env: dict):
        self.processes = [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                          for command in commands]
        self.pid = self.processes[0].pid
        self.returncode = None
        self.first_failed: int | None = None  # the index of the host that failed first

    def poll(self):
        codes = [p.poll() for p in self.processes]
        failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if failed and self.first_failed is None:
            self.first_failed = failed[0]
            if None in codes:
                self.send_signal(signal.SIGTERM)  # a peer failed: the others would only wait for it
        if None not in codes:
            self.returncode = codes[self.first_failed] if failed else 0
        return self.returncode

    def wait(self, timeout: float | None = None):
        for process in self.processes:
            process.wait(timeout)
        return self.poll()

    def send_signal(self, signum) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
