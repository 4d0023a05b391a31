"""Token auth as TorchServe does it: keys in a key file, sent as `Authorization: Bearer <key>`.

    keys = load_or_create_keys("model_store/key_file.json")
    keys.check("management", request.headers.get("authorization"))   # raises a 401 RequestError

The key file (mode 0600) has TorchServe's layout, so its tooling and habits carry over:

    {"management": {"key": "..."}, "inference": {"key": "..."}, "API": {"key": "..."}}

Management needs its key by default; inference only with `--auth-inference`. The "API" key
opens both, and TorchServe's token API: `GET /token?type=management` (or `inference`) with the
API key replaces that key, in the server and in the key file, at once.
"""
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from nlpforge.errors import RequestError, ServingError

KINDS = ("management", "inference", "API")


@dataclass
class Keys:
    management: str
    inference: str
    api: str
    path: Path | None = None

    def check(self, kind: str, authorization: str | None) -> None:
        if not authorization:
            raise RequestError(f"this {kind} API needs a token: send 'Authorization: Bearer <key>' with the "
                               f"{kind} key from {self.path}", status=401, headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = authorization.partition(" ")
        accepted = (self.api,) if kind == "API" else (getattr(self, kind), self.api)
        token = token.strip()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), k.encode())
                                                 for k in accepted):
            raise RequestError(f"the token is not the {kind} key; read it from {self.path}", status=401,
                               headers={"WWW-Authenticate": "Bearer"})

    def regenerate(self, kind: str) -> str:
        """A new key for `kind` (management or inference), written to the key file; the old one stops working."""
        if kind not in ("management", "inference"):
            raise RequestError(f"type {kind!r}: give type=management or type=inference")
        setattr(self, kind, secrets.token_urlsafe(18))
        write_keys(self.path, {"management": self.management, "inference": self.inference, "API": self.api})
        return getattr(self, kind)


def write_keys(path: Path, keys: dict[str, str], replace: bool = True) -> bool:
    """Write the key file (mode 0600) whole, then put it in place, so no reader sees half of it. Without
    `replace`, an existing file is kept (another server wrote it first) and the answer is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({kind: {"key": key} for kind, key in keys.items()}, handle, indent=2)
    if replace:
        os.replace(partial, path)
        return True
    try:
        os.link(partial, path)
        return True
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)


def load_or_create_keys(path) -> Keys:
    """Read the key file, or write a new one with fresh random keys."""
    path = Path(path)
    if path.exists():
        try:
            data = json.loads(_key_text(path))
            return Keys(data["management"]["key"], data["inference"]["key"], data["API"]["key"], path)
        except (ValueError, KeyError, TypeError):
            raise ServingError(f"{path}: not a key file (need management, inference and API keys); point "
                               "--key-file at another path to have a new one written there (delete this file only "
                               "if it is an old key file)") from None
    keys = {kind: secrets.token_urlsafe(18) for kind in KINDS}
    try:
        written = write_keys(path, keys, replace=False)
    except OSError as error:
        raise ServingError(f"--key-file {path}: a new key file cannot be written there "
                           f"({error.strerror or error}); point --key-file at a place you can write to") from None
    if not written:
        return load_or_create_keys(path)
    return Keys(keys["management"], keys["inference"], keys["API"], path)


def read_key(path, kind: str = "management") -> str | None:
    """The key of `kind` from a key file, or None when there is no file (a client-side helper)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(_key_text(path))[kind]["key"]
    except (ValueError, KeyError, TypeError):
        raise ServingError(f"{path}: not a key file with a {kind} key; give the server's "
                           "<model-store>/key_file.json") from None


def _key_text(path: Path) -> str:
    """A key file's text, or a ServingError naming the path (a folder, unreadable)."""
    if path.is_dir():
        raise ServingError(f"{path}: is a folder; a key file is the server's <model-store>/key_file.json")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ServingError(f"{path}: the key file cannot be read ({getattr(error, 'strerror', None) or error})") \
            from None
