"""Replicas of `nlpforge serve` on one model store serve the same models, through one state file.

    nlpforge serve --model-store /shared/store --shared-state --inference-port 8080 ...   # on every replica

With `--shared-state`, what a replica serves (each model's versions with their url and options, the
default version, traffic weights and shadow) lives in `<model-store>/.nlpforge-replicas/state.json`.
A management call on any replica (register, unregister, traffic, set-default) takes the lock file
beside it, catches up with the file, acts on its own registry, then writes what it changed with the
next revision (a temporary file, then os.replace: a reader sees the old file or the new one, whole).
So management calls are serialised across replicas, and two of them never undo each other.

Every replica looks at the file (one stat) each `--shared-state-poll` seconds and, when it changed,
adopts it: it loads the versions it lacks with the same url and options, takes the routing, then
unregisters what is gone. Propagation: a routing change (weights, shadow, set-default) or an
unregister reaches every replica within one poll interval plus the read (milliseconds): under 1 s
with the default poll of 0.5 s, unless that replica is running a management call of its own. A new
version takes that plus the time its workers need to start. Weights keep their order and exact
values (JSON floats round-trip), so a sticky key (`--sticky-header`, the same on every replica)
picks the same version everywhere.

Every replica loads a version from the url it was registered with: keep models in the model store
(relative urls) or at the same absolute path on every host. The model store must be one file system
with working locks for all of them (a local disk, NFSv4). Worker counts (scale) and the keys as loaded
from the key file stay each replica's own; give each replica its own `--capture-dir`, as a capture
file is written by one process.

A corrupt or unreadable file is reported (file and fix): the replica keeps serving its last good state
and answers management calls 503 until the file is deleted (the next management call writes it again
from that replica's models) or restored. A replica that finds it so at start does not start.
"""
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from nlpforge.errors import NlpforgeError, RequestError, ServingError
from nlpforge.serving.registry import MAX_WEIGHT, ModelRegistry, Routing
from nlpforge.serving.settings import VersionOptions
from nlpforge.settings import check_writable, to_flat

log = logging.getLogger("nlpforge.serving")

FOLDER = ".nlpforge-replicas"
FORMAT = 1
LOCK_TIMEOUT = 600.0  # seconds a management call waits for another replica's (a register waits for its workers)


def snapshot(registry: ModelRegistry) -> dict:
    """What a registry serves, as the state file holds it: {name: {"versions": {...}, "routing": {...}}}."""
    return {name: {"versions": {version: {"url": runtime.spec.url, "options": to_flat(runtime.spec.options)}
                                for version, runtime in model.versions.items()},
                   "routing": {"default": model.routing.default, "weights": [[v, w] for v, w in model.routing.weights],
                               "shadow": model.routing.shadow}}
            for name, model in registry.models.items() if model.routing is not None}


def patch(models: dict, before: dict, after: dict) -> dict:
    """`models` (the file's) with what changed from `before` to `after` (this replica's) written over it,
    version by version, so that a version this replica could not load is not dropped for the others."""
    models = json.loads(json.dumps(models))
    for name in before.keys() | after.keys():
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if new is None:
            models.pop(name, None)
            continue
        old = old or {"versions": {}, "routing": None}
        entry = models.setdefault(name, {"versions": {}, "routing": new["routing"]})
        for version in old["versions"].keys() - new["versions"].keys():
            entry["versions"].pop(version, None)
        for version in new["versions"].keys() - old["versions"].keys():
            entry["versions"][version] = new["versions"][version]
        if new["routing"] != old["routing"]:
            entry["routing"] = new["routing"]
    return models


def check_document(document) -> None:
    """Raise ValueError naming the first thing in a parsed state file that is not as `snapshot` writes it."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} state (an object with \"format\": {FORMAT})")
    if not isinstance(document.get("revision"), int) or not isinstance(document.get("models"), dict):
        raise ValueError("\"revision\" must be a whole number and \"models\" an object")
    for name, entry in document["models"].items():
        versions, routing = (entry.get("versions"), entry.get("routing")) if isinstance(entry, dict) else (None, None)
        if not isinstance(versions, dict) or not versions or not isinstance(routing, dict):
            raise ValueError(f"model {name!r} needs \"versions\" (not empty) and \"routing\"")
        for version, served in versions.items():
            if not isinstance(served, dict) or not isinstance(served.get("url"), str) \
                    or not isinstance(served.get("options"), dict):
                raise ValueError(f"model {name!r} version {version!r} needs \"url\" and \"options\"")
        weights = routing.get("weights")
        if routing.get("default") not in versions or not isinstance(weights, list) \
                or any(not isinstance(p, list) or len(p) != 2 or p[0] not in versions
                       or not isinstance(p[1], (int, float)) for p in weights) \
                or routing.get("shadow") not in (None, *versions):
            raise ValueError(f"model {name!r}: routing must name its own versions, with weights as "
                             "[[version, number], ...]")
        # as set_traffic allows: NaN or infinity would break Routing.pick (a 500, or all traffic to one version)
        if any(isinstance(w, bool) or not 0 <= w <= MAX_WEIGHT for _, w in weights) \
                or (weights and sum(w for _, w in weights) <= 0):
            raise ValueError(f"model {name!r}: traffic weights must be numbers from 0 to {MAX_WEIGHT}, at least "
                             "one above 0")


def routing_of(entry: dict) -> Routing:
    routing = entry["routing"]
    return Routing(default=routing["default"], weights=tuple((str(v), float(w)) for v, w in routing["weights"]),
                   shadow=routing["shadow"])



def token(document: dict) -> tuple:
    """What tells one written state from another, even after the file was deleted and written again."""
    return document["revision"], document.get("written_by"), document.get("written_at")


class SharedState:
    """The state file of the replicas on one model store, and this replica's view of it."""

    def __init__(self, model_store, registry: ModelRegistry, poll: float = 0.5):
        self.folder = Path(model_store) / FOLDER
        self.path = self.folder / "state.json"
        self.lock_path = self.folder / "state.lock"
        self.registry = registry
        self.poll = poll
        self.writer = f"{socket.gethostname()}:{os.getpid()}"
        self.mutex = asyncio.Lock()  # this replica's management calls and adoptions, one at a time
        self.seen = None             # (revision, written_by, written_at) of the state last adopted or written
        self.signature = None        # the file's stat when last read
        self.reported = None         # the signature whose problem was last logged

    def open(self) -> None:
        """Before the server listens: refuse a model store where the state cannot be written, or a bad file."""
        check_writable(self.folder, "--model-store (with --shared-state)", folder=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_file().close()
        except RequestError as error:
            raise ServingError(error.message) from None
        self.read()

    # --- the file ------------------------------------------------------------------------------------
    def read(self) -> dict | None:
        """The state file, checked; None when there is none yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            problem = getattr(error, "strerror", None) or error
            raise ServingError(self._broken(f"cannot be read ({problem})")) from None
        try:
            document = json.loads(text)
            check_document(document)
        except (ValueError, TypeError) as error:  # TypeError: e.g. a list where a version name belongs
            raise ServingError(self._broken(f"is not a valid shared state ({error})")) from None
        return document

    def _broken(self, problem: str) -> str:
        if self.seen is None:  # nothing adopted or written yet: the replica is starting, and stops
            return (f"shared state file {self.path} {problem}; this replica cannot start from it. Delete the file "
                    "(it is written again from the models of the next replica that starts or changes) or restore "
                    "it, then start again")
        return (f"shared state file {self.path} {problem}; this replica keeps serving what it served. Delete the "
                "file (the next management call on any replica writes it again from that replica's models) or "
                "restore it")

    def _write(self, models: dict, revision: int) -> dict:
        document = {"format": FORMAT, "revision": revision, "written_by": self.writer, "written_at": time.time(),
                    "models": models}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            raise RequestError(f"shared state file {self.path}: cannot write it ({error.strerror or error}); this "
                               "replica changed but the others did not; free space or fix the permissions of "
                               f"{self.folder}, then repeat the call", status=503) from None
        self.seen = token(document)
        return document

    def _after_seen(self) -> int:
        """The revision of a file written anew (none yet, or deleted): past the last one seen here."""
        return self.seen[0] + 1 if self.seen else 1

    @contextlib.asynccontextmanager
    async def _locked(self):
        """The lock file, held across replicas (released by the kernel if this process dies)."""
        with self._lock_file() as handle:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RequestError(f"{self.lock_path}: another replica has held the shared state for over "
                                           f"{LOCK_TIMEOUT:.0f} s; try again, or stop the replica that holds it",
                                           status=503) from None
                    await asyncio.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _lock_file(self):
        try:
            return open(self.lock_path, "a+")
        except OSError as error:
            raise RequestError(f"lock file {self.lock_path}: cannot be opened ({error.strerror or error}); remove "
                               "what is at that path (the lock file is made again) or fix its permissions",
                               status=503) from None

    # --- changes and adoption ------------------------------------------------------------------------
    async def change(self, action):
        """Run one management `action` (a coroutine function) for every replica: under the lock, catch up with
        the file, act on this registry, then write what changed. Returns its result."""
        async with self.mutex, self._locked():
            try:
                document = self.read()
            except ServingError as error:
                raise RequestError(error.message, status=503) from None
            if document is not None and token(document) != self.seen:
                await self.adopt(document)
            before = snapshot(self.registry)
            result = await action()
            after = snapshot(self.registry)
            if document is None:
                self._write(after, revision=self._after_seen())
            elif after != before:
                self._write(patch(document["models"], before, after), revision=document["revision"] + 1)
            return result

    async def join(self, load_models) -> None:
        """At start: serve what the file says, run `load_models` (this replica's --models; those already served
        are skipped), then add to the file the models it lacks. Loading runs outside the lock, so replicas that
        start together load their models side by side."""
        async with self.mutex:
            document = self.read()
            if document is not None:
                await self.adopt(document)
            await load_models()
            async with self._locked():
                document = self.read()
                mine = snapshot(self.registry)
                if document is None:
                    self._write(mine, revision=self._after_seen())
                    return
                missing = {name: entry for name, entry in mine.items() if name not in document["models"]}
                if missing:
                    document = self._write(patch(document["models"], {}, missing), revision=document["revision"] + 1)
            await self.adopt(document)  # what others added while this replica loaded

    async def adopt(self, document: dict) -> None:
        """Serve what `document` says: load missing versions, take the routing, unregister what is gone. A
        version that cannot be loaded here is logged and left out; the rest is still adopted."""
        self.seen = token(document)
        registry, models = self.registry, document["models"]
        for name, entry in models.items():
            for version, served in entry["versions"].items():
                if name in registry.models and version in registry.models[name].versions:
                    continue
                try:
                    options = VersionOptions.of(**served["options"])
                    await registry.register(served["url"], name, version, options)
                    log.info("shared state: model %s version %s loaded from %s", name, version, served["url"])
                except NlpforgeError as error:
                    log.error("shared state: cannot load model %s version %s from %s here: %s", name, version,
                              served["url"], error.message)
            if name in registry.models:
                routing = routing_of(entry)
                try:
                    if registry.models[name].routing != routing:
                        registry.set_routing(name, routing)
                        log.info("shared state: model %s routing %s", name, routing.describe())
                except RequestError as error:
                    log.error("shared state: model %s keeps its routing here: %s", name, error.message)
        for name, model in list(registry.models.items()):
            gone = list(model.versions) if name not in models else \
                [v for v in model.versions if v not in models[name]["versions"]]
            try:
                if name not in models:
                    await registry.unregister(name)
                else:
                    for version in gone:
                        await registry.unregister(name, version)
                if gone:
                    log.info("shared state: model %s version(s) %s unregistered", name, ", ".join(gone))
            except RequestError as error:
                log.error("shared state: model %s: %s", name, error.message)

    async def watch(self) -> None:
        """Adopt the file each time it changes; runs until cancelled."""
        while True:
            await asyncio.sleep(self.poll)
            try:
                stat = self.path.stat()
                signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except FileNotFoundError:
                continue  # nothing written yet, or deleted to be written again: keep serving what we serve
            if signature == self.signature:
                continue
            try:
                async with self.mutex:
                    document = self.read()  # read again under the mutex: a change here may have just written it
                    if document is not None and token(document) != self.seen:
                        await self.adopt(document)
                self.signature = signature
            except ServingError as error:
                self.signature = signature
                if self.reported != signature:
                    log.error("%s", error.message)
                    self.reported = signature
            except Exception:  # noqa: BLE001 - the replica must go on serving and watching
                log.exception("shared state: adopting %s failed; trying again at its next change", self.path)
                self.signature = signature

