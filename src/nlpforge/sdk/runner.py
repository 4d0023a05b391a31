"""Run one prepared training job to its end: the local stand-in for SageMaker's training service.

    run_job(JobPaths(folder), stream=print)     # in-process, what fit(wait=True) does
    python -m nlpforge.sdk.runner FOLDER        # detached, what fit(wait=False) starts

It starts the script (python, or torchrun with one process per host for instance_count > 1, or one
torchrun node per machine over SSH when the job names ssh_hosts: see nlpforge.sdk.remote),
keeps one log stream per host (torchrun writes each rank's output to its own files, followed
here line by line) and streams them, prefixed `[algo-N]` when there are several, turns log lines
into metrics with the metric_definitions regexes,
enforces max_run, handles stop requests, simulates spot interruptions (SIGTERM, wait for
capacity, restart from the checkpoint folder), packs model.tar.gz and output.tar.gz to the
output path, writes output/failure on failure (the failing host's last traceback), and records the
job in MLflow.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from traceback import format_exc

from nlpforge.errors import ConfigError, NlpforgeError
from nlpforge.sdk.contract import MASTER_HOST, JobPaths, JobSpec, host_names
from nlpforge.sdk.jobs import (now_iso, read_json, read_metrics, rule_evaluations, script_environment,
                              update_status, write_json)
from nlpforge.sdk.remote import HostProcesses, host_commands

SPOT_GRACE_SECONDS = 120  # SageMaker's two-minute interruption notice
STOP_GRACE_SECONDS = 30
HOST_ENTRY = Path(__file__).with_name("host_entry.py")
TRACEBACK = "Traceback (most recent call last):"
RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s?")  # torch.distributed's excepthook marks each traceback line
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
# Errors a host raises because another host failed first.
PEER_FAILURE = re.compile(r"Connection (closed|reset) by peer|remote worker|Broken pipe|timed out|Timeout|"
                          r"DistNetworkError|DistBackendError")


class StopJob(Exception):
    """Raised by an on_metric callback to stop the job (tuning's early stopping)."""


def compile_metric_definitions(definitions, error=ConfigError) -> list[tuple[str, re.Pattern]]:
    """SageMaker's metric_definitions as (name, regex) pairs; one that is malformed or whose regex does not compile
    raises `error` naming it, so that the Estimator and the tuner refuse it before a job starts."""
    if definitions is None:
        return []
    if not isinstance(definitions, (list, tuple)):
        raise error(f"metric_definitions must be a list of {{'Name': ..., 'Regex': ...}} dicts, not {definitions!r}")
    compiled = []
    for definition in definitions:
        if not isinstance(definition, dict) or set(definition) != {"Name", "Regex"} \
                or not all(isinstance(value, str) and value for value in definition.values()):
            raise error("each metric definition must be {'Name': ..., 'Regex': ...} with two strings, e.g. "
                        f"{{'Name': 'validation:accuracy', 'Regex': 'val_acc=([0-9.]+)'}}, got {definition!r}")
        try:
            compiled.append((definition["Name"], re.compile(definition["Regex"])))
        except re.error as problem:
            raise error(f"metric definition '{definition['Name']}': Regex {definition['Regex']!r} is not a valid "
                        f"regular expression ({problem}); fix it, e.g. 'val_acc=([0-9.]+)'") from None
    return compiled


class MetricRecorder:
    """Appends metric values to metrics.jsonl as log lines or engine JSONL lines reveal them."""

    def __init__(self, paths: JobPaths, definitions, on_metric=None):
        self.paths = paths
        self.patterns = compile_metric_definitions(definitions)
        self.on_metric = on_metric
        self.counts: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.callback_error: str | None = None
        self.engine_names: set[str] = set()
        self.engine_offset = 0
        self.lock = threading.Lock()

    def record(self, name: str, value: float, source: str, step=None) -> None:
        with self.lock:
            step = self.counts.get(name, 0) if step is None else int(step)
            self.counts[name] = self.counts.get(name, 0) + 1
            row = {"name": name, "value": value, "step": step, "timestamp": time.time(), "source": source}
            with open(self.paths.metrics, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.on_metric is not None and self.stop_reason is None:
            try:
                self.on_metric(name, value, step)
            except StopJob as stop:
                self.stop_reason = str(stop) or "stopped by its tuning job"
            except Exception as error:  # a failing callback must not stop the log from being read
                self.callback_error = f"{type(error).__name__}: {error}"

    def poll_engine(self) -> None:
        """Read what the training engine added to its metrics.jsonl since the last poll: in the run's
        training folder while it trains, in the model folder once the model is written (the same file,
        moved, so the offset holds).

        A metric the engine reports is taken from there, with the engine's global step, and no
        longer from the log regexes, so that its history is not counted twice.
        """
        from nlpforge.models.artifact import training_folder

        for path in (training_folder(self.paths.model) / "metrics.jsonl", self.paths.model / "metrics.jsonl"):
            try:
                with open(path, "rb") as handle:
                    handle.seek(self.engine_offset)
                    chunk = handle.read()
                break
            except FileNotFoundError:
                continue
        else:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.engine_offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.engine_names.add(key)
                    self.record(key, float(value), "engine", step=row.get("step"))

    def scan(self, line: str) -> None:
        for name, pattern in self.patterns:
            if name in self.engine_names:
                continue
            match = pattern.search(line)
            if match:
                try:
                    self.record(name, float(match.group(1) if pattern.groups else match.group(0)), "log")
                except (ValueError, IndexError):
                    pass


class HostStreams:
    """The job's output, one stream per host.

    A host's lines go to logs/<host>.log and, prefixed `[host]` when the job has several hosts, to the
    combined logs/training.log, the live stream and the metric regexes. Only whole lines are passed on,
    so lines of different hosts are never spliced. torchrun's own lines are marked `[torchrun]` and
    runner notes `[nlpforge]`.
    """

    def __init__(self, paths: JobPaths, hosts: list[str], log_handle, stream, recorder: MetricRecorder):
        self.log_handle, self.stream, self.recorder = log_handle, stream, recorder
        self.prefixed = len(hosts) > 1
        self.files = {host: open(paths.host_log(host), "a", encoding="utf-8") for host in hosts}
        self.launcher_lines: list[str] = []
        self.traceback_order: list[str] = []  # hosts in the order their first traceback arrived
        self.lock = threading.Lock()

    def line(self, host: str | None, text: str) -> None:
        """One whole line of a host (None: torchrun itself)."""
        shown = f"[{host or 'torchrun'}] {text}" if self.prefixed else text
        with self.lock:
            if host is None:
                self.launcher_lines = [*self.launcher_lines[-400:], text]
            else:
                self.files[host].write(text + "\n")
                self.files[host].flush()
                if RANK_PREFIX.sub("", text).startswith(TRACEBACK) and host not in self.traceback_order:
                    self.traceback_order.append(host)
            self.log_handle.write(shown + "\n")
            self.log_handle.flush()
            if self.stream is not None:  # print writes a line and its newline apart: one thread at a time
                self.stream(shown)
        if host is not None:
            self.recorder.scan(text)

    def note(self, text: str, show: bool = False) -> None:
        with self.lock:
            self.log_handle.write(f"[nlpforge] {text}\n")
            self.log_handle.flush()
            if show and self.stream is not None:
                self.stream(f"[nlpforge] {text}")

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def pump_output(process: subprocess.Popen, streams: HostStreams, host: str | None) -> None:
    """The process's stdout, line by line, as one host's stream (None: torchrun's own output)."""
    for raw in iter(process.stdout.readline, b""):
        streams.line(host, raw.decode("utf-8", errors="replace").rstrip("\r\n"))


class RankFiles(threading.Thread):
    """Follows the stdout.log and stderr.log that torchrun (`--redirects 3 --log-dir`) writes for each rank,
    and hands every whole line to its host's stream; a last line without a newline is passed on at the end."""

    def __init__(self, log_dir: Path, hosts: list[str], streams: HostStreams, poll: float = 0.1):
        super().__init__(daemon=True)
        self.log_dir, self.hosts, self.streams, self.poll = log_dir, hosts, streams, poll
        self.read: dict[Path, tuple[int, bytes]] = {}  # file -> (bytes read, the unfinished line)
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.wait(self.poll):
            self.follow()
        self.follow(final=True)

    def follow(self, final: bool = False) -> None:
        for rank, host in enumerate(self.hosts):
            for path in sorted(self.log_dir.glob(f"*/attempt_*/{rank}/std*.log")):
                offset, partial = self.read.get(path, (0, b""))
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                *lines, partial = (partial + chunk).split(b"\n")
                if final and partial:
                    lines, partial = [*lines, partial], b""
                for line in lines:
                    self.streams.line(host, line.decode("utf-8", errors="replace").rstrip("\r"))
                self.read[path] = (offset + len(chunk), partial)

    def stop(self) -> None:
        self.finished.set()
        self.join(timeout=10)


def command_for(spec: JobSpec, paths: JobPaths, rank_logs: Path) -> list[str]:
    """python script args, or torchrun with one process per host, each rank's output in its own files."""
    if spec.instance_count == 1:
        return [*spec.interpreter, spec.entry_point, *spec.command_args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(spec.instance_count), "--redirects", "3", "--log-dir", str(rank_logs),
            str(HOST_ENTRY), str(paths.host_environments), *spec.interpreter[1:], spec.entry_point,
            *spec.command_args]


def failure_reason(paths: JobPaths, hosts: list[str], exit_code: int, command: list[str],
                   launcher_lines: list[str] = (), traceback_order: list[str] = (),
                   exited_first: str | None = None) -> str:
    """The script's own output/failure if a host wrote one, else the toolkit's ExecuteUserScriptError with the
    failing host and its last traceback."""
    for host in hosts:
        failure = paths.host_output(host) / "failure"
        if failure.exists() and failure.read_text(encoding="utf-8").strip():
            return failure.read_text(encoding="utf-8").strip()
    errors = {host: last_traceback(paths.host_log(host)) for host in hosts}
    host, root_exit_code = failing_host(hosts, errors, launcher_lines, traceback_order, exited_first)
    traceback, message = errors[host]
    return "\n".join(["AlgorithmError: ExecuteUserScriptError:", f"ExitCode {root_exit_code or exit_code}",
                      f"ErrorMessage \"{message}\"", f"Host {host}", *traceback, f"Command \"{' '.join(command)}\""])


def last_traceback(log: Path) -> tuple[list[str], str]:
    """A host log's last traceback, without the frames of the launcher that ran the script, and its error line
    (the last lines of the log when there is no traceback)."""
    lines = []
    if log.exists():
        lines = [RANK_PREFIX.sub("", line) for line in
                 log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]]
    starts = [i for i, line in enumerate(lines) if line.startswith(TRACEBACK)]
    traceback, launcher_frame = [], False
    for line in lines[starts[-1]:] if starts else []:
        if line.startswith("  File "):
            launcher_frame = str(HOST_ENTRY) in line or '"<frozen runpy>"' in line
        if launcher_frame and line.startswith("  "):
            continue
        traceback.append(line)
        if len(traceback) > 1 and line and not line[0].isspace():
            break  # the exception line ends the traceback
    traceback = traceback[:1] + traceback[1:][-30:]
    errors = [line for line in (traceback or lines[-5:]) if ERROR_LINE.match(line)]
    return traceback, errors[-1] if errors else "\n".join(lines[-3:])


def failing_host(hosts: list[str], errors: dict, launcher_lines, traceback_order,
                 exited_first: str | None = None) -> tuple[str, int | None]:
    """The host whose error ended the job, and its exit code when torchrun reported it.

    A host whose error is only that a peer went away (gloo's "Connection closed by peer", a timed-out
    collective) failed because of another; among the others, torchrun's "Root Cause" is preferred, then the
    first host seen printing a traceback, then the host whose process ended first (over SSH), then the master.
    """
    root = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", "\n".join(launcher_lines), re.S)
    root_host, root_code = (hosts[int(root.group(1))], int(root.group(2))) \
        if root and int(root.group(1)) < len(hosts) else (None, None)
    raised = [host for host in traceback_order if errors[host][0]]
    causes = [host for host in raised if not PEER_FAILURE.search(errors[host][1])]
    if causes:
        return (root_host, root_code) if root_host in causes else (causes[0], None)
    if root_host:
        return root_host, root_code
    return (raised[0] if raised else exited_first or MASTER_HOST), None


def install_requirements(paths: JobPaths, log_handle, stream) -> None:
    requirements = paths.code / "requirements.txt"
    if not requirements.exists():
        return
    command = [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(requirements)]
    log_handle.write(f"installing {requirements.name}: {' '.join(command)}\n")
    done = subprocess.run(command, cwd=paths.code, capture_output=True, text=True)
    for line in (done.stdout + done.stderr).splitlines():
        log_handle.write(line + "\n")
        if stream:
            stream(line)
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if line.startswith("ERROR:")]
        said = f": {errors[-1][:300]}" if errors else ""
        raise RuntimeError(f"ClientError: installing requirements.txt failed (pip exit {done.returncode}){said}; "
                           "fix requirements.txt (pip's whole output is in the job log)")


def pack(folder: Path, archive: Path) -> Path:
    """A .tar.gz of a folder's contents at its root, as SageMaker packs /opt/ml/model."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    return archive


def terminate(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the script's process group; SIGKILL it if it is still running after grace seconds."""
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait()


def signal_group(process: subprocess.Popen, signum) -> None:
    if isinstance(process, HostProcesses):
        process.send_signal(signum)
        return
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class _JobRun:
    """One job from start to end: its spec, folders, environment, command, log and metrics."""

    def __init__(self, paths: JobPaths, stream, on_metric):
        self.paths, self.stream = paths, stream
        self.spec = JobSpec.read(paths.spec)
        self.recorder = MetricRecorder(paths, self.spec.metric_definitions, on_metric)
        self.hosts = host_names(self.spec.instance_count)
        self.command = command_for(self.spec, paths, paths.rank_logs / "attempt-1")
        env = script_environment(self.spec.environment, read_json(paths.host_environments / "algo-1.json", {}))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.code), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env
        self.started = time.monotonic()
        self.attempts: list[dict] = []
        self.host_commands: list[list[str]] = []  # over SSH: one command per host
        self.exited_first: str | None = None       # over SSH: the host whose process failed first
        self.log_handle = self.streams = None

    def note(self, line: str) -> None:
        self.streams.note(line)

    def attempt(self, run_limit: float | None, interrupt_after: float | None) -> tuple[int, str, float]:
        """One run of the script, for at most run_limit seconds.

        Returns (exit code, how it ended: exited/interrupted/stopped/timeout/pruned, seconds it ran).
        """
        rank_files, self.exited_first = None, None
        self.streams.launcher_lines, self.streams.traceback_order = [], []
        if self.spec.ssh_hosts:
            process = self.start_over_ssh()
            pumps = [threading.Thread(target=pump_output, daemon=True, args=(p, self.streams, host))
                     for p, host in zip(process.processes, self.hosts)]
        else:
            if len(self.hosts) > 1:
                rank_logs = self.paths.rank_logs / f"attempt-{len(self.attempts) + 1}"
                self.command = command_for(self.spec, self.paths, rank_logs)
                rank_files = RankFiles(rank_logs, self.hosts, self.streams)
            self.note(f"attempt {len(self.attempts) + 1}: {' '.join(self.command)}")
            process = subprocess.Popen(self.command, cwd=self.paths.code, env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            pumps = [threading.Thread(target=pump_output, daemon=True,
                                      args=(process, self.streams, None if rank_files else MASTER_HOST))]
        update_status(self.paths, ProcessPid=process.pid, SecondaryStatus="Training")
        for pump in pumps:
            pump.start()
        if rank_files:
            rank_files.start()
        started = time.monotonic()
        try:
            ended, grace = self.watch(process, started, run_limit, interrupt_after)
        except BaseException:  # the script runs in its own session, so Ctrl-C (or our own failure) must stop it
            terminate(process, STOP_GRACE_SECONDS)
            for pump in pumps:
                pump.join(timeout=10)
            if rank_files:
                rank_files.stop()
            raise
        if ended != "exited":
            terminate(process, grace)
        for pump in pumps:
            pump.join(timeout=10)
        if rank_files:
            rank_files.stop()
        self.recorder.poll_engine()
        if isinstance(process, HostProcesses) and process.first_failed is not None:
            self.exited_first = self.hosts[process.first_failed]
            self.command = self.host_commands[process.first_failed]
        return process.returncode, ended, time.monotonic() - started

    def start_over_ssh(self) -> HostProcesses:
        """Start one torchrun node per SSH host; the job folder is at the same path on each of them."""
        spec, paths = self.spec, self.paths
        program = [spec.interpreter[0], str(HOST_ENTRY), str(paths.host_environments), *spec.interpreter[1:],
                   spec.entry_point, *spec.command_args]
        env = {**spec.environment, "PYTHONPATH": str(paths.code), "PYTHONUNBUFFERED": "1"}
        commands = self.host_commands = host_commands(spec.ssh_hosts, program, str(paths.code), env)
        self.command = commands[0]
        for host, command in zip(self.hosts, commands):
            self.note(f"attempt {len(self.attempts) + 1}, {host}: {' '.join(command)}")
        return HostProcesses(commands, self.env)

    def watch(self, process, started: float, run_limit, interrupt_after) -> tuple[str, float]:
        """Wait for the script to exit or for a reason to stop it; returns (reason, grace seconds)."""
        grace, polled = STOP_GRACE_SECONDS, 0.0
        while process.poll() is None:
            time.sleep(0.05)
            if time.monotonic() - polled >= 0.5:
                self.recorder.poll_engine()
                polled = time.monotonic()
            if self.paths.stop_request.exists():
                ended = "stopped"
            elif self.recorder.stop_reason:
                ended = "pruned"
            elif interrupt_after is not None and time.monotonic() - started >= interrupt_after:
                ended, grace = "interrupted", SPOT_GRACE_SECONDS
            elif run_limit is not None and time.monotonic() - started >= run_limit:
                ended = "timeout"
            else:
                continue
            if ended == "interrupted":
                self.note(f"spot interruption after {interrupt_after:.1f}s: sending SIGTERM")
            return ended, grace
        return "exited", STOP_GRACE_SECONDS

    def run_attempts(self) -> tuple[str, str | None]:
        """Run the script until it succeeds or the job must end; returns (outcome, failure reason or None)."""
        spec = self.spec
        interruptions = list(spec.spot.interruptions) if spec.use_spot_instances else []
        failures = 0
        while True:
            interrupt_after = interruptions.pop(0) if interruptions else None
            attempt_start = now_iso()
            # max_run bounds the running time of all attempts; waiting for spot capacity does not count.
            run_limit = spec.max_run - sum(a["seconds"] for a in self.attempts) if spec.max_run else None
            exit_code, ended, seconds = self.attempt(run_limit, interrupt_after)
            self.attempts.append({"start": attempt_start, "seconds": round(seconds, 3), "exit_code": exit_code,
                                  "ended": ended})
            update_status(self.paths, Attempts=self.attempts)
            if ended == "exited" and exit_code == 0:
                return "Completed", None
            if ended == "interrupted":
                waited = spec.spot.capacity_wait
                if spec.max_wait and time.monotonic() - self.started + waited > spec.max_wait:
                    return "Stopped", ("MaxWaitTimeExceeded: spot capacity did not return within "
                                       f"max_wait={spec.max_wait}s")
                update_status(self.paths, SecondaryStatus="Interrupted")
                self.note(f"waiting {waited:.1f}s for spot capacity, then restarting from {spec.checkpoint_dir}")
                time.sleep(waited)
                continue
            if ended == "stopped":
                return "Stopped", "the job was stopped on request"
            if ended == "pruned":
                return "Stopped", f"early stopping: {self.recorder.stop_reason}"
            if ended == "timeout":
                return "Failed", f"MaxRuntimeExceeded: the job ran longer than max_run={spec.max_run}s and was stopped"
            reason = failure_reason(self.paths, self.hosts, exit_code, self.command, self.streams.launcher_lines,
                                    self.streams.traceback_order, self.exited_first)
            failures += 1
            if failures > spec.max_retry_attempts:
                return "Failed", reason
            self.note(f"attempt failed; retry {failures} of {spec.max_retry_attempts}")
            for host in self.hosts:
                (self.paths.host_output(host) / "failure").unlink(missing_ok=True)

    def run(self) -> dict:
        paths, spec = self.paths, self.spec
        update_status(paths, TrainingJobStatus="InProgress", SecondaryStatus="Starting",
                      TrainingStartTime=now_iso(), SupervisorPid=os.getpid(), Attempts=[])
        if spec.tracking:
            # Load MLflow while the script runs, so recording the run adds little after it ends.
            threading.Thread(target=warm_up_tracking, daemon=True).start()
        model_artifacts, keyboard = None, False
        with open(paths.log, "a", encoding="utf-8") as self.log_handle:
            self.streams = HostStreams(paths, self.hosts, self.log_handle, self.stream, self.recorder)
            for line in spec.notes:
                self.streams.note(line, show=True)
            try:
                if spec.install_requirements:
                    update_status(paths, SecondaryStatus="Downloading")
                    install_requirements(paths, self.log_handle, self.stream)
                outcome, reason = self.run_attempts()
            except RuntimeError as error:  # requirements.txt could not be installed
                outcome, reason = "Failed", str(error)
            except NlpforgeError as error:  # the hosts could not be reached
                outcome, reason = "Failed", f"ClientError: {error.message}"
            except KeyboardInterrupt:
                outcome, reason, keyboard = "Stopped", "interrupted from the keyboard", True
            except Exception as error:  # a bug of ours: the job still ends, Failed, with the reason
                outcome, reason = "Failed", f"ClientError: {type(error).__name__}: {error}"
                self.note(format_exc().rstrip())
            if self.recorder.callback_error:
                self.note(f"the metric callback failed: {self.recorder.callback_error}")
            if outcome == "Completed":
                update_status(paths, SecondaryStatus="Uploading")
                try:
                    archive = pack(paths.model, Path(spec.output_path) / spec.job_name / "output" / "model.tar.gz")
                    pack(paths.output_data, archive.with_name("output.tar.gz"))
                    model_artifacts = {"S3ModelArtifacts": str(archive)}
                except OSError as error:  # the model stays in the job folder
                    outcome, reason = "Failed", (f"ClientError: cannot write model.tar.gz under output_path "
                                                 f"{spec.output_path} ({error}); the model is in {paths.model}")
            if outcome != "Completed":
                paths.failure.write_text(reason + "\n", encoding="utf-8")
                self.note(f"job {outcome.lower()}: {reason}")
            self.streams.close()
        running = sum(a["seconds"] for a in self.attempts)
        training_seconds = time.monotonic() - self.started
        billable = running * spec.spot.price_ratio if spec.use_spot_instances else running
        status = update_status(
            paths, TrainingJobStatus=outcome, SecondaryStatus=outcome, FailureReason=reason,
            TrainingEndTime=now_iso(), TrainingTimeInSeconds=max(1, math.ceil(training_seconds)),
            BillableTimeInSeconds=max(1, math.ceil(billable)), RunningSeconds=round(running, 3),
            WallSeconds=round(training_seconds, 3), Attempts=self.attempts, ModelArtifacts=model_artifacts,
            ProcessPid=None)
        if spec.tracking and not keyboard:
            record_in_tracking(paths, spec, status, self.stream)
        if keyboard:
            raise KeyboardInterrupt
        return read_json(paths.status)


def run_job(paths: JobPaths, stream=None, on_metric=None) -> dict:
    """Run the job described by paths.spec to its end; returns the final status dict. A job that cannot even
    start (an unreadable job.json, a metric regex that does not compile) ends Failed with the reason, so that
    describe, wait and logs never see it InProgress for ever."""
    try:
        job = _JobRun(paths, stream, on_metric)
    except Exception as error:
        reason = "ClientError: the job could not start: " + \
            (error.message if isinstance(error, NlpforgeError) else f"{type(error).__name__}: {error}")
        try:
            with open(paths.log, "a", encoding="utf-8") as handle:
                handle.write(f"[nlpforge] job failed: {reason}\n")
            paths.failure.write_text(reason + "\n", encoding="utf-8")
        except OSError:  # a job folder without its log or output folder: status.json still says why
            pass
        return update_status(paths, TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=reason,
                             TrainingEndTime=now_iso(), ProcessPid=None)
    return job.run()


def warm_up_tracking() -> None:
    try:
        import nlpforge.tracking.runs  # noqa: F401  (first: it turns MLflow's telemetry off)

        import mlflow.tracking  # noqa: F401
    except ImportError:
        pass


def record_in_tracking(paths: JobPaths, spec: JobSpec, status: dict, stream=None) -> None:
    """The job as an MLflow run; a failure is said in the log and to `stream` (fit's output), never raised."""
    from nlpforge.tracking.runs import log_training_job

    try:
        rules = {"DebugRuleEvaluationStatuses": rule_evaluations(paths.model)}
        run_id = log_training_job(paths, spec, {**status, **rules}, read_metrics(paths))
    except Exception as error:  # tracking must never turn a finished job into a failed one
        line = f"[nlpforge] could not record the job in MLflow: {str(error).splitlines()[0][:500]}"
        with open(paths.log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if stream is not None:
            stream(line)
        return
    update_status(paths, MlflowRunId=run_id)


if __name__ == "__main__":
    job = JobPaths(Path(sys.argv[1]))
    write_json(job.root / "runner.pid", os.getpid())
    run_job(job)
