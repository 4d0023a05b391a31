"""Replicas of `nlpforge serve` as processes on one model store, behind a real HAProxy started with them."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving_support import free_port, free_ports

# roundrobin over the replicas; /ping decides who is in. A request that finds a replica dead (refused,
# reset, no answer) or answering 5xx is sent again, to another replica (redispatch on every retry).
HAPROXY_CONFIG = """\
global
    maxconn 512

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on all-retryable-errors

frontend inference
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /ping
    http-check expect status 200
    http-response set-header X-Replica %s
{servers}

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@dataclass
class Replica:
    """One `nlpforge serve --shared-state` process, in its own session so that its workers go with it."""

    name: str
    process: subprocess.Popen
    ports: dict
    log: Path

    def url(self, which: str = "inference") -> str:
        return f"http://127.0.0.1:{self.ports[which + '_port']}"

    def kill(self) -> None:
        """SIGKILL the server process alone, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Kill the server and whatever it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_replica(name: str, store, log_folder, *flags: str) -> Replica:
    ports = free_ports()
    log = Path(log_folder) / f"{name}.log"
    command = [sys.executable, "-m", "nlpforge", "serve", "--model-store", str(store), "--shared-state",
               "--threads", "1", *(f"--{key.replace('_', '-')}={port}" for key, port in ports.items()), *flags]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return Replica(name, process, ports, log)


def wait_until_healthy(replica: Replica, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"replica {replica.name} exited {replica.process.returncode}:\n"
                               f"{replica.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(replica.url() + "/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"replica {replica.name} not healthy after {timeout} s:\n{replica.log.read_text()[-3000:]}")


@dataclass
class Balancer:
    url: str
    stats_url: str

    def counters(self) -> dict:
        """The backend's HAProxy counters from the stats CSV, e.g. {"wretr": 2, "wredis": 2, ...}."""
        lines = httpx.get(self.stats_url + ";csv").text.splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row["pxname"] == "replicas" and row["svname"] == "BACKEND":
                return {k: int(v) for k, v in row.items() if v.isdigit()}
        raise AssertionError(f"no backend row in {lines}")


@contextlib.contextmanager
def haproxy(replicas: list[Replica], folder):
    """HAProxy in front of `replicas`' inference ports, checking /ping every 200 ms."""
    program = shutil.which("haproxy")
    port, stats_port = free_port(), free_port()
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.ports['inference_port']} check inter 200ms fall 2 rise 1"
                        for r in replicas)
    config = Path(folder) / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, stats_port=stats_port, servers=servers))
    log = Path(folder) / "haproxy.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([program, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    balancer = Balancer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats")
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(balancer.url + "/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not answer:\n{log.read_text()}")
            time.sleep(0.1)
        yield balancer
    finally:
        process.terminate()
        process.wait(10)
