"""The served models: their versions, the default one, traffic weights and a shadow.

    registry = ModelRegistry(model_store="model_store", metrics=metrics)
    await registry.register("stars", "stars", "1.0", VersionOptions(batch_size=8))
    await registry.register("stars-v2.tar.gz", "stars", "2.0", VersionOptions())
    registry.set_traffic("stars", {"1.0": 90, "2.0": 10}, shadow=None)
    runtime, shadow = registry.route("stars", None, sticky_key="user-42")   # 1.0 about 90% of the time
    registry.set_default("stars", "2.0")                                      # promote: one atomic swap

Each model's routing (default, weights, shadow) is one frozen object replaced in a single
assignment, so a request sees the old routing or the new one, never half of each. A sticky key
(a request header) hashes to the same version every time while the weights stay the same.

Names and versions follow TorchServe's rule (NAME_RULE), since both become folders and headers; a
relative model url must resolve inside the model store, and no url may hold `..`. Replicas on one
model store share all of this through replicas.py.
"""
import asyncio
import hashlib
import os
import random
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.errors import ArtifactError, RequestError
from nlpforge.serving.batching import VersionRuntime, VersionSpec
from nlpforge.serving.handler import default_threads, task_of, text_columns_in
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.settings import VersionOptions

MAX_WEIGHT = 1_000_000  # the largest traffic weight of one version (weights are on any scale, e.g. 90/10)
MAX_NAME_BYTES = 255  # the longest file or folder name Linux and macOS file systems take


@dataclass(frozen=True)
class Routing:
    default: str
    weights: tuple[tuple[str, float], ...] = ()   # ((version, weight), ...); empty: all to default
    shadow: str | None = None

    def pick(self, sticky_key: str | None, rng: random.Random) -> str:
        if not self.weights:
            return self.default
        total = sum(w for _, w in self.weights)
        if sticky_key:
            digest = hashlib.sha256(sticky_key.encode("utf-8")).digest()
            point = int.from_bytes(digest[:8], "big") / 2 ** 64 * total
        else:
            point = rng.random() * total
        for version, weight in self.weights:
            if point < weight:
                return version
            point -= weight
        return self.weights[-1][0]

    def without(self, version: str) -> "Routing":
        """This routing with `version` left out of the weights and the shadow (it must not be the default)."""
        weights = tuple((v, w) for v, w in self.weights if v != version)
        if sum(w for _, w in weights) <= 0:
            weights = ()  # nothing left with a weight: all to the default
        return Routing(default=self.default, weights=weights, shadow=None if self.shadow == version else self.shadow)

    def describe(self) -> dict:
        return {"defaultVersion": self.default, "weights": {v: w for v, w in self.weights}, "shadow": self.shadow}


@dataclass
class ServedModel:
    name: str
    versions: dict[str, VersionRuntime] = field(default_factory=dict)
    routing: Routing | None = None


class ModelRegistry:
    """Every served model; the management API and the inference routes both go through it."""

    def __init__(self, model_store, metrics: ServerMetrics, seed: int | None = None):
        self.model_store = Path(model_store)
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.lock = asyncio.Lock()
        self.rng = random.Random(seed)

    # --- lookups -------------------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none yet"
            raise RequestError(f"model {name!r} is not registered (served: {known}); "
                               "register it with POST /models?url=...", status=404)
        return self.models[name]

    def version(self, name: str, version: str | None) -> VersionRuntime:
        """The runtime of `version`, or of the default version when `version` is None or ""."""
        return self.named_version(name, version or self.model(name).routing.default)

    def named_version(self, name: str, version: str) -> VersionRuntime:
        """The runtime of exactly `version` (no default): a 404 naming the versions otherwise."""
        model = self.model(name)
        if version not in model.versions:
            raise RequestError(f"model {name!r} has no version {version!r} (versions: "
                               f"{', '.join(model.versions)})", status=404)
        return model.versions[version]

    def route(self, name: str, version: str | None, sticky_key: str | None = None):
        """(the runtime that answers, the shadow runtime or None) for one inference request."""
        if version is not None:
            return self.version(name, version), None
        model = self.model(name)
        routing = model.routing  # one read: the routing cannot change half-way through
        chosen = model.versions[routing.pick(sticky_key, self.rng)]
        shadow = (model.versions.get(routing.shadow) if routing.shadow and routing.shadow != chosen.spec.version
                  else None)
        return chosen, shadow

    # --- registration --------------------------------------------------------------------------------
    def resolve_url(self, url: str) -> Path:
        """A model folder from `url`: a folder or .tar.gz, absolute, or relative to the model store and then
        inside it once resolved (symbolic links included). Like TorchServe, any `..` is refused."""
        if not url:  # TorchServe's answer too: an empty url names no model file
            raise RequestError("url is empty: give the path of an nlpforge model folder or a .tar.gz of one",
                               status=404)
        if any(ord(c) < 32 or c == "\x7f" for c in url):
            raise RequestError(f"url {url!r} holds a control character (such as a NUL byte); give a plain path "
                               "of an nlpforge model folder or a .tar.gz of one")
        if "://" in url and not url.startswith("file://"):
            raise RequestError(f"url {url!r}: the server loads local files only; download the model first "
                               "and give its path")
        if ".." in url:
            raise RequestError(f"url {url!r}: relative paths with '..' are not allowed; give a path inside the "
                               f"model store {self.model_store} or an absolute path")
        path = Path(url.removeprefix("file://"))
        shown = url if len(url) <= 120 else f"{url[:100]}...{url[-12:]}"
        too_long = next((part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES), None)
        if too_long is not None:
            raise RequestError(f"url {shown!r}: a file or folder name in it is {len(os.fsencode(too_long))} bytes "
                               f"long, over the limit of {MAX_NAME_BYTES}; give the path of an nlpforge model folder "
                               "or a .tar.gz of one")
        try:
            if not path.is_absolute():
                path = inside(self.model_store, path, f"url {shown!r}")
            if not path.exists():
                raise RequestError(f"url {shown!r}: nothing at {path}; give an nlpforge model folder or .tar.gz "
                                   f"(relative paths are read from the model store {self.model_store})", status=404)
            is_archive = path.is_file() and path.name.endswith((".tar.gz", ".tgz"))
            is_folder = path.is_dir()
        except OSError as error:  # e.g. a path too long as a whole, or a folder it may not read
            raise RequestError(f"url {shown!r}: cannot be read ({error.strerror or error}); give the path of an "
                               "nlpforge model folder or a .tar.gz of one") from None
        if is_archive:
            return self._extract(path)
        if not is_folder:
            raise RequestError(f"url {shown!r}: {path} is neither a model folder nor a .tar.gz")
        return path

    def _extract(self, archive: Path) -> Path:
        digest = hashlib.sha256(f"{archive.resolve()}:{archive.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        stem = archive.name.split(".")[0][:100]  # room for the digest and the .partial suffix in one name
        target = inside(self.model_store, Path(".extracted") / f"{stem}-{digest}", str(archive))
        if not target.exists():
            # One partial folder per process: replicas on one model store may extract the same archive at once.
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            try:
                partial.mkdir(parents=True, exist_ok=True)
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(partial, filter="data")  # refuses absolute paths and ../ escapes
            # A truncated archive ends in EOFError (gzip) or tarfile.ReadError; a damaged one in zlib.error.
            except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
                shutil.rmtree(partial, ignore_errors=True)
                raise RequestError(f"{archive}: cannot extract ({error or type(error).__name__}); give a whole "
                                   ".tar.gz of a model folder") from None
            try:
                partial.rename(target)
            except OSError:
                if not target.exists():
                    raise
                shutil.rmtree(partial, ignore_errors=True)  # another replica's extraction won
        found = [p.parent for p in target.rglob("nlpforge.json")] + \
            [p.parents[1] for p in target.rglob("code/inference.py")]
        if not found:
            shutil.rmtree(target, ignore_errors=True)
            raise RequestError(f"{archive}: holds no model folder (no nlpforge.json, nor SageMaker's "
                               "code/inference.py, inside)")
        return sorted(found, key=lambda p: len(p.parts))[0]

    async def register(self, url: str, name: str | None, version: str | None,
                       options: VersionOptions) -> VersionRuntime:
        """Load a model version and start its workers; answers once they are up. The version is listed (its
        workers LOADING) from the start, so an asynchronous register can be scaled or unregistered at once."""
        version = "1.0" if version is None else str(version)  # an empty model_version= is refused, not 1.0
        check_names(name, version)
        folder = self.resolve_url(url)
        try:
            task = task_of(folder)
        except ArtifactError as error:
            raise RequestError(error.message) from None
        if name is None:
            name = folder.name
            check_names(name, None, "model_name (by default the folder's name; give model_name)")
        spec = VersionSpec(name=name, version=version, folder=str(folder), url=url, task=task, options=options,
                           threads=options.threads or default_threads(options.workers),
                           text_columns=text_columns_in(folder, task))
        async with self.lock:
            self.check_free(name, version)
            runtime = VersionRuntime(spec, self.metrics)
            model = self.models.setdefault(name, ServedModel(name))
            model.versions[version] = runtime
            if model.routing is None:
                model.routing = Routing(default=version)
        try:
            await runtime.start()
        except Exception:
            async with self.lock:
                model = self.models.get(name)
                if model is not None and model.versions.get(version) is runtime:
                    del model.versions[version]
                    if not model.versions:
                        del self.models[name]
            await runtime.close(drain=False)
            raise
        return runtime

    def check_free(self, name: str, version: str | None) -> None:
        """A 409 when `name` already has `version` (default "1.0") registered."""
        version = str(version or "1.0")
        if name in self.models and version in self.models[name].versions:
            raise RequestError(f"model {name!r} version {version!r} is already registered; unregister it "
                               "first or give another model_version", status=409)

    async def unregister(self, name: str, version: str | None = None) -> list[str]:
        """Remove a model (every version) or one version; accepted inputs are answered first."""
        async with self.lock:
            model = self.model(name)
            if version is None:
                removed = list(model.versions.values())
                del self.models[name]
            else:
                if version not in model.versions:
                    raise RequestError(f"model {name!r} has no version {version!r}", status=404)
                routing = model.routing
                in_use = {routing.default, routing.shadow, *(v for v, w in routing.weights if w > 0)}
                if version in in_use and len(model.versions) > 1:
                    raise RequestError(f"version {version!r} of {name!r} still takes traffic (default, weight or "
                                       "shadow); set-default or change the traffic first", status=409)
                removed = [model.versions.pop(version)]
                if not model.versions:
                    del self.models[name]
                else:  # a weight of 0 named it: the routing must not name a version that is gone
                    model.routing = routing.without(version)
        await asyncio.gather(*(r.close() for r in removed))
        return [r.spec.version for r in removed]

    def set_default(self, name: str, version: str) -> Routing:
        """Promote `version`: it becomes the default and takes all traffic, in one assignment."""
        model = self.model(name)
        self.version(name, version)
        shadow = model.routing.shadow if model.routing.shadow != version else None
        return self.set_routing(name, Routing(default=version, weights=(), shadow=shadow))

    def set_traffic(self, name: str, weights: dict[str, float] | None, shadow: str | None = "") -> Routing:
        """Weights per version (any scale, e.g. 90/10) and a shadow version; "" keeps the shadow, None drops it."""
        model = self.model(name)
        current = model.routing
        pairs = current.weights
        if weights is not None:
            pairs = []
            for version, weight in weights.items():
                self.named_version(name, str(version))
                try:
                    if isinstance(weight, bool):  # float(true) is 1.0: a flag is no weight
                        raise TypeError
                    weight = float(weight)
                except (TypeError, ValueError):
                    raise RequestError(f"weight of version {version!r} must be a number, got {weight!r}") from None
                if not 0 <= weight <= MAX_WEIGHT:
                    raise RequestError(f"weight of version {version!r} must be between 0 and {MAX_WEIGHT}")
                pairs.append((str(version), weight))
            if pairs and sum(w for _, w in pairs) <= 0:
                raise RequestError("at least one traffic weight must be above 0")
            pairs = tuple(pairs)
        if shadow == "":
            shadow = current.shadow
        elif shadow is not None:
            self.named_version(name, shadow)
        return self.set_routing(name, Routing(default=current.default, weights=pairs, shadow=shadow))

    def set_routing(self, name: str, routing: Routing) -> Routing:
        """Replace a model's whole routing in one assignment (replicas adopt each other's this way)."""
        model = self.model(name)
        for version in {routing.default, routing.shadow, *(v for v, _ in routing.weights)} - {None}:
            self.named_version(name, version)
        model.routing = routing
        return routing

    def describe(self, name: str, version: str | None = None) -> list[dict]:
        model = self.model(name)
        routing = model.routing
        runtimes = model.versions.values() if version in (None, "all") else [self.version(name, version)]
        if version is None:
            runtimes = [model.versions[routing.default]]
        return [{**r.describe(), "isDefault": r.spec.version == routing.default, "routing": routing.describe()}
                for r in runtimes]

    def listing(self, limit: int | str | None = None, next_page_token: int | str | None = None) -> dict:
        """One page of models. As in TorchServe, an empty or negative limit is the default (100), one above
        the most (1000) is the most, and an empty or negative next_page_token is 0; limit 0 is refused,
        since its page would never end."""
        names = sorted(self.models)
        try:
            limit = int(limit) if limit not in (None, "") else 100
        except ValueError:
            raise RequestError(f"limit {limit!r} must be a whole number (1..1000; default 100)") from None
        try:
            start = max(0, int(next_page_token)) if next_page_token not in (None, "") else 0
        except ValueError:
            raise RequestError("next_page_token must be the value a previous GET /models returned") from None
        if limit == 0:
            raise RequestError("limit 0 lists nothing and never ends; give limit 1..1000 or leave it out")
        limit = 100 if limit < 0 else min(limit, 1000)
        page = names[start:start + limit]
        out = {"models": [{"modelName": n, "modelUrl": self.models[n].versions[self.models[n].routing.default].spec.url}
                          for n in page]}
        if start + limit < len(names):
            out["nextPageToken"] = str(start + limit)
        return out

    def without_workers(self) -> list[str]:
        """The "name/version"s that have no live worker and none starting (a /ping then answers Unhealthy). A
        version whose workers are starting leaves the server healthy, so that a load balancer keeps sending it
        the other models' traffic while a version is registered."""
        return [f"{name}/{version}" for name, model in sorted(self.models.items())
                for version, runtime in model.versions.items()
                if not runtime.live and not runtime.scaled_to_zero and not runtime.loading]

    async def close(self) -> None:
        runtimes = [r for m in self.models.values() for r in m.versions.values()]
        await asyncio.gather(*(r.close() for r in runtimes))
        self.models.clear()


RESERVED_VERSIONS = ("all", "traffic")  # /models/NAME/all describes every version, /models/NAME/traffic routes
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]*")  # TorchServe's rule for model names and versions


def valid_name(value: str) -> bool:
    """Whether a model name or version keeps TorchServe's rule: 1-100 characters of NAME_RULE."""
    return len(value) <= 100 and NAME_RULE.fullmatch(value) is not None


def check_names(name: str | None, version: str | None, what: str = "model_name") -> None:
    """Refuse a model name or version that breaks TorchServe's rule (both become paths and headers)."""
    for value, shown in ((name, what), (version, "model_version")):
        if value is not None and not valid_name(value):
            raise RequestError(f"{shown} {value!r}: use 1-100 ASCII letters, digits, '-', '_' or '.', starting "
                               "with a letter or digit")
    if version in RESERVED_VERSIONS:
        raise RequestError(f"model_version {version!r} is reserved: /models/NAME/{version} is a route of its own "
                           "(traffic weights, every version); choose another, e.g. 2.0")


def inside(root: Path, relative: Path, what: str) -> Path:
    """`root / relative`, refused when it resolves (symbolic links included) to a place outside `root`."""
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise RequestError(f"{what}: {path} lies outside {root}; give a path inside it")
    return path

