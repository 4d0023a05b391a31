"""A real OpenSSH server on loopback, standing in for the machines of a small cluster.

`ssh_cluster` starts Debian's sshd on a free port with its own host key and one client key, and writes an
ssh config in which `node1` and `node2` are two names for this machine; NLPFORGE_SSH_OPTIONS="-F <that
config>" makes nlpforge's ssh calls use it. The tests that need it skip when sshd is not installed.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from serving_support import free_port

SSHD = "/usr/sbin/sshd"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def ssh_cluster(tmp_path_factory):
    """(the ssh config file, ["node1", "node2"]), both names reaching this machine over a real sshd."""
    if not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("OpenSSH is not installed (make test installs openssh-server and openssh-client)")
    folder = tmp_path_factory.mktemp("ssh")
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {folder / 'sshd.pid'}\n")
    config = folder / "ssh_config"
    config.write_text(
        f"Host node1 node2\n  HostName 127.0.0.1\n  Port {port}\n  User {os.environ.get('USER') or 'root'}\n"
        f"  IdentityFile {folder / 'client_key'}\n  UserKnownHostsFile {folder / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=subprocess.DEVNULL,
                              stderr=open(folder / "sshd.log", "w"))
    try:
        for _ in range(100):
            done = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "node1", "true"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                break
            if server.poll() is not None:
                pytest.skip(f"sshd could not start: {(folder / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
        else:
            pytest.skip(f"cannot log in over ssh to this machine: {done.stderr.strip()}")
        yield config, ["node1", "node2"]
    finally:
        server.terminate()
        server.wait(timeout=10)
