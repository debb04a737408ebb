"""Where things are: the repo root, and paths given relative to it.

Notebooks run with whatever working directory JupyterLab or papermill gives them; every path a
parameter names (``data_dir``, ``runs_dir``) is resolved against the repo root (the folder holding
this project's ``pyproject.toml``) unless it is absolute, so ``data/fmnist`` means the same thing
from ``notebooks/``, from the repo root and inside papermill's kernel.

URLs that may carry a password (``tracker_uri``, ``sync_to``: ``http://user:pass@host``,
``...?token=...``) are recorded and printed through ``redact_url`` / ``redact_text``: the credentials
become ``***``, the rest stays as given, so the record still names the server and the path.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def repo_root() -> Path:
    """The project root: $FOLDBOOK_ROOT, else the nearest parent of cwd (or of this package) with pyproject.toml."""
    if os.environ.get("FOLDBOOK_ROOT"):
        return Path(os.environ["FOLDBOOK_ROOT"]).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for d in (start, *start.parents):
            if (d / "pyproject.toml").exists() and (d / "lib").is_dir():
                return d
    return Path.cwd().resolve()


def resolve(path) -> Path:
    """``path`` if absolute, else relative to the repo root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else repo_root() / p


def same_path(a, b) -> bool:
    """Whether two path settings name one file or folder: each resolved against the repo root (``resolve``),
    ``.`` and ``..`` collapsed and symlinks followed; ``data/cars`` and ``/abs/repo/data/cars`` are one."""
    return os.path.realpath(resolve(a)) == os.path.realpath(resolve(b))


def relative(path) -> Path:
    """``path`` relative to the repo root when it lies inside it (for messages and printed paths),
    else as given."""
    p = resolve(path)
    try:
        return p.resolve().relative_to(repo_root())
    except ValueError:
        return p


def work_dir(data_root: Path, override=None) -> Path:
    """Where the kit writes what it derives from a competition folder (class table, folds, caches,
    EDA tables): ``override`` when given; else ``$FOLDBOOK_WORK/<name>-<hash>``; else the folder
    itself when it can be written (the usual case); else ``<repo>/work/<name>-<hash>`` (a read-only
    input, e.g. ``/kaggle/input``). Nothing is ever written into a read-only competition folder."""
    if override:
        return resolve(override)
    tag = f"{data_root.name}-{hashlib.sha1(str(data_root).encode()).hexdigest()[:8]}"
    if os.environ.get("FOLDBOOK_WORK"):
        return resolve(os.environ["FOLDBOOK_WORK"]) / tag
    if _writable(data_root):
        return data_root
    return repo_root() / "work" / tag


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permission bits do not bind root, and a
    read-only mount binds everyone)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".foldbook-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


REDACTED = "***"
# scheme://user:password@ (or user@, or a token as user) up to the host: the userinfo part of a URL
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]+)@")
# ?token=... &X-Amz-Signature=... &sig=...: a query value whose name says it is a secret
_SECRET_QUERY = re.compile(r"(?P<name>[?&][^=&#\s]*(?:token|secret|passw|pwd|key|sig|credential|auth)[^=&#\s]*=)"
                           r"(?P<value>[^&#\s]+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``: the user:password (or token)
    before the host, and the values of query parameters named like a secret (token, key, secret, password,
    sig, credential, auth). For error messages that may quote a URL (MLflow's, fsspec's)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", str(text))
    return _SECRET_QUERY.sub(lambda m: f"{m['name']}{REDACTED}", text)


def redact_url(url: str | None) -> str | None:
    """A URL as runs record and print it: ``http://user:pass@host:5000/x?token=t`` ->
    ``http://***@host:5000/x?token=***``; a URL without credentials (or None) as it is."""
    return None if url is None else redact_text(url)


def has_credentials(url: str | None) -> bool:
    """Whether ``url`` holds credentials that ``redact_url`` would hide (not counting ones already hidden)."""
    return url is not None and redact_url(url) != url


def is_redacted(url: str | None) -> bool:
    """Whether ``url`` is a recorded URL whose credentials were replaced by ``***`` (``redact_url``)."""
    return url is not None and (f"://{REDACTED}@" in url or f"={REDACTED}" in url)
