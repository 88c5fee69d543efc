"""Pulling published weights into the local cache: the download mechanics behind ``backfire models``.

Which models have published weights, and where, is each model's spec
(:data:`backfire.inpainters.registry.SPECS`, a :class:`~backfire.inpainters.specs.Release`: what the model
is, which attackers' tools run it, its size and licence, its URL and checksum); the measures' networks
(CLIP-FID's CLIP, LPIPS's backbones) are listed in :data:`backfire.metric_weights.METRIC_WEIGHTS` and pulled
the same way. Release files (``big-lama.pt``, MAT, MI-GAN) are
fetched with pooch: streamed to a temporary name, checked against the published md5/sha256, and
only then moved into place, so the cache never holds a partial or wrong file. A connection cut
mid-way is retried and resumed with an HTTP Range request. Hub repositories (Stable Diffusion
inpainting) are fetched with huggingface_hub at a pinned commit.

The cache is ``$BACKFIRE_HOME/models`` (default: the user cache directory, ``~/.cache/backfire``
on Linux, ``XDG_CACHE_HOME`` honoured). ``BACKFIRE_MODELS=registry.toml`` replaces the URL and
checksum of the entries it names, for mirrors and air-gapped sites::

    [lama]
    url = "http://mirror.example/big-lama.pt"
    md5 = "e3aa4aaa15225a33ec84f9f4bc47e500"

    [lpips-alex."alex.pth"]          # a release of several files: one table per file
    url = "http://mirror.example/alex.pth"
    sha256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"

A file downloaded by other means is adopted with :func:`add`, which checks it like a download.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from backfire.errors import ModelError, NotPulledError, first_line
from backfire.inpainters.registry import released
from backfire.inpainters.specs import Release, cache_dir
from backfire.metric_weights import METRIC_WEIGHTS

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "RELEASES",
    "DownloadError",
    "ModelStatus",
    "NotPulledError",
    "Release",
    "add",
    "cache_dir",
    "get_release",
    "has_release",
    "is_pulled",
    "list_models",
    "path",
    "pull",
    "registry",
    "remove",
]

REGISTRY_ENV = "BACKFIRE_MODELS"
DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection or for the next bytes of a download."""


def check_timeout(seconds: float) -> float:
    """A timeout as the user gives it, or a ValueError saying why (one line): ``--timeout`` and :func:`pull`
    check it by this one rule (requests takes no zero, negative or infinite wait, and would say so only as
    a failed download)."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {seconds}")
    return float(seconds)


DEFAULT_RETRIES = 3
"""Further attempts after a failed download (network error or checksum mismatch); each resumes."""
_CHUNK = 1 << 16


class DownloadError(ModelError):
    """A pull failed (unreachable host, HTTP error, timeout, cut connection, wrong checksum); nothing was kept."""


SD_INPAINT_FILES = ["*.ckpt", "sd-v1-5-inpainting*", "safety_checker/*", "*.fp16.*", "*.msgpack", "*.onnx",
                    "*.onnx_data", "*.pb", "*.h5", "*.ot"]
"""Left out of the sd-inpaint pull: the single-file checkpoints at the repository's root, the safety
checker (backfire's loader runs without it, as an attacker does), fp16 duplicates and other frameworks."""

RELEASES: dict[str, Release] = {**released(), **METRIC_WEIGHTS}
"""The built-in releases, read from the model specs (IOPaint's pinned URLs and md5s, and the hub repository
diffusers users load), then the measures' networks."""


# --------------------------------------------------------------------------------------------
# Registry and cache


def registry() -> dict[str, Release]:
    """The built-in releases, with the entries of the ``BACKFIRE_MODELS`` file (if set) replacing theirs."""
    override = os.environ.get(REGISTRY_ENV, "").strip()
    return _apply_override(RELEASES, Path(override).expanduser()) if override else dict(RELEASES)


def _apply_override(releases: dict[str, Release], file: Path) -> dict[str, Release]:
    where = f"{REGISTRY_ENV}={file}"
    try:
        tables = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: cannot read it ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{where}: not valid TOML ({exc})") from exc
    merged = dict(releases)
    for name, table in tables.items():
        if name not in releases:
            raise ModelError(f"{where}: [{name}] is not a model backfire knows; known: {', '.join(releases)}")
        if not isinstance(table, dict):
            raise ModelError(f"{where}: {name} must be a table ([{name}] with url and md5 or sha256)")
        merged[name] = _override_entry(releases[name], table, where)
    return merged


def _override_entry(release: Release, table: dict, where: str) -> Release:
    if release.parts:  # one table per file, named by the file
        files = {str(part.file): part for part in release.parts}
        unknown = sorted(set(table) - set(files))
        if unknown or not all(isinstance(v, dict) for v in table.values()):
            raise ModelError(f"{where}: [{release.name}] is several files; give one table per file, "
                             f"[{release.name}.\"FILE\"] with FILE one of {', '.join(files)}")
        parts = tuple(_override_entry(part, table.get(str(part.file), {}), where) if str(part.file) in table
                      else part for part in release.parts)
        return replace(release, parts=parts)
    keys = {"repo", "revision"} if release.on_hub else {"url", "md5", "sha256"}
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ModelError(f"{where}: [{release.name}] has no key {', '.join(unknown)}; valid: {', '.join(sorted(keys))}")
    if any(not isinstance(v, str) or not v.strip() for v in table.values()):
        raise ModelError(f"{where}: [{release.name}] values must be non-empty strings")
    if release.on_hub:
        return replace(release, **{k: v.strip() for k, v in table.items()})
    if "url" not in table or len({"md5", "sha256"} & set(table)) != 1:
        raise ModelError(f"{where}: [{release.name}] needs url and exactly one of md5, sha256 (every download "
                         "is checked)")
    digest = {"md5": 32, "sha256": 64}
    for alg, length in digest.items():
        if alg in table and not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", table[alg].strip()):
            raise ModelError(f"{where}: [{release.name}] {alg} must be {length} hex digits, got {table[alg]!r}")
    return replace(release, url=table["url"].strip(), md5=table.get("md5", "").strip().lower() or None,
                   sha256=table.get("sha256", "").strip().lower() or None)


def has_release(name: str) -> bool:
    """Whether ``name`` has published weights that backfire can pull."""
    return name.strip().lower() in RELEASES


def get_release(name: str) -> Release:
    """The registry entry of ``name`` (override file applied). Raises ModelError for an unknown name."""
    releases = registry()
    key = name.strip().lower()
    if key not in releases:
        raise ModelError(f"no published weights for model {name!r}; models with a release: {', '.join(releases)}")
    return releases[key]


def is_pulled(name: str) -> bool:
    """Whether the weights of ``name`` are in the cache (they were checked when they were put there)."""
    return get_release(name).is_pulled


def path(name: str) -> Path:
    """The pulled weights of ``name`` (a file, or a folder for hub repositories).

    Raises:
        NotPulledError: not pulled yet; the message says how to get them.
    """
    return get_release(name).pulled()


@dataclass(frozen=True)
class ModelStatus:
    """One row of :func:`list_models`."""

    release: Release
    pulled: bool
    path: Path


def list_models() -> list[ModelStatus]:
    """Every model with a release: what it is, whether it is pulled, and where it is (or would be)."""
    rows = []
    for release in registry().values():
        location = release.location
        rows.append(ModelStatus(release, release.complete(location), location))
    return rows


def remove(name: str) -> bool:
    """Delete the pulled weights of ``name``; False if there were none."""
    folder = cache_dir() / get_release(name).name
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


# --------------------------------------------------------------------------------------------
# Pulling


def pull(names: Iterable[str], progress: bool = True, timeout: float = DEFAULT_TIMEOUT,
         retries: int = DEFAULT_RETRIES, log: Callable[[str], object] | None = None) -> list[Path]:
    """Download and check the weights of each model in ``names``; those already pulled are not fetched again.

    ``progress`` shows a progress bar (on stderr) for downloads longer than a second; ``log``
    (a callable taking one line, e.g. ``print``) is told what is downloaded from where.

    Raises:
        DownloadError: one line naming what failed and the URL; nothing partial was kept.
        ModelError: an unknown name, or a bad ``BACKFIRE_MODELS`` file.
    """
    timeout = check_timeout(timeout)
    releases = [get_release(name) for name in names]
    paths = []
    for release in releases:
        for part in release.files:
            what = release.name if part is release else f"{release.name}: {part.file}"
            if _cached(part, part.location):
                if log is not None:
                    log(f"{what}: already pulled")
                continue
            if log is not None:
                log(f"pulling {what} ({part.size}) from {part.source}")
            if part.on_hub:
                _pull_hub(part, part.location, progress)
            else:
                _pull_file(part, part.location, progress, timeout, retries)
        paths.append(release.location)
    return paths


def _cached(release: Release, location: Path) -> bool:
    """Pulled and, for a release file, still matching its checksum (a damaged file is pulled again)."""
    if release.on_hub or not location.is_file():
        return release.complete(location)
    return release.matches(_file_hash(location, release))


def _file_hash(file: Path, release: Release) -> str:
    """``file``'s checksum in the algorithm of ``release``'s published one (lowercase hex)."""
    import pooch

    return pooch.file_hash(str(file), alg=release.checksum[0]).lower()


def _pull_file(release: Release, location: Path, progress: bool, timeout: float, retries: int) -> None:
    import pooch
    import requests

    folder = location.parent
    existed = folder.exists()
    partial = folder / f".{location.name}.part"
    fetcher = pooch.create(path=folder, base_url="", registry={location.name: release.known_hash},
                           urls={location.name: str(release.url)}, retry_if_failed=retries)
    # pooch checks whole digests; a published prefix is checked by the downloader, before pooch moves the file
    check = None if release.known_hash else release
    if check is not None:
        location.unlink(missing_ok=True)  # here only when it failed the check; pooch would keep it as it is
    downloader = _ResumingDownloader(partial, timeout, progress, release.name, check)
    try:
        with _quiet_pooch():
            fetcher.fetch(location.name, downloader=downloader)
    except _HTTPStatusError as exc:
        raise _failed(release, f"HTTP {exc.status} {exc.reason}".strip()) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        received = partial.stat().st_size if partial.exists() else 0
        raise _failed(release, _unreachable(exc, str(release.url), timeout, received)) from exc
    except requests.exceptions.HTTPError as exc:  # 5xx, retried until the attempts ran out
        status = exc.response.status_code if exc.response is not None else "error"
        raise _failed(release, f"HTTP {status}") from exc
    except requests.exceptions.RequestException as exc:
        raise _failed(release, f"download failed ({type(exc).__name__})") from exc
    except ValueError as exc:
        if not _is_mismatch(exc):  # not pooch's nor the prefix check's: say what it was, never "checksum"
            raise _failed(release, f"download failed ({first_line(exc)})") from exc
        got = re.search(r"but got (\w+)", str(exc))
        alg, expected = release.checksum
        raise _failed(release, f"checksum mismatch ({alg} expected {expected}, got "
                               f"{got.group(1) if got else 'another'})") from exc
    except OSError as exc:  # the cache itself: not writable, disk full
        raise _failed(release, f"cannot write {folder} ({exc.strerror or exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
        _tidy(folder, existed)


def _tidy(folder: Path, existed: bool) -> None:
    """Remove ``folder`` if this call created it and left it empty."""
    if not existed and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _unreachable(error: Exception, url: str, timeout: float, received: int) -> str:
    """What a network failure was, in words: a wait past ``timeout`` (requests raises a read timeout inside a
    download as a ConnectionError), a connection cut after ``received`` bytes, or a host that could not be
    reached, with the system's reason (connection refused, unknown name …)."""
    from urllib.parse import urlsplit

    import requests
    from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout

    host = urlsplit(url).netloc or url
    causes = list(_causes(error))
    # the system's refusal (refused, unknown name, no route); urllib3 files it under its timeouts
    refused = next((c.strerror for c in causes if isinstance(c, OSError) and not isinstance(c, TimeoutError)
                    and c.strerror), None)
    waited = any(isinstance(c, (requests.exceptions.Timeout, Urllib3Timeout, TimeoutError))
                 and not isinstance(c, NewConnectionError) for c in causes)
    if refused and not received:
        return f"could not reach {host}: {refused[:1].lower()}{refused[1:]}"
    if waited:
        after = f" after {received} bytes" if received else ""
        return f"could not reach {host}: no answer within {timeout:g} s{after}"
    if received:
        return f"the connection broke after {received} bytes"
    return f"could not reach {host}: cannot connect"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: its cause and context, the exceptions in its arguments (requests keeps
    urllib3's there) and their ``reason`` (urllib3's MaxRetryError keeps the connection's error there)."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]


def _is_mismatch(error: ValueError) -> bool:
    """Whether ``error`` is a checksum that differs: pooch's words, or :class:`_ResumingDownloader`'s prefix check."""
    return isinstance(error, _PrefixMismatch) or "does not match the known hash" in str(error)


class _PrefixMismatch(ValueError):
    """The download does not start with the published checksum prefix (a ValueError: pooch retries it)."""


def _failed(release: Release, what: str) -> DownloadError:
    way_out = ("name a local diffusers folder with --weights" if release.on_hub else
               f"if you have the file, adopt it with `backfire models add {release.name} FILE`")
    return DownloadError(f"cannot pull {release.name}: {what} for {release.source}; nothing was kept; {way_out}")


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs each download at INFO on stderr; backfire says it once in its own words."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _HTTPStatusError(Exception):
    """A 4xx answer: permanent, so not retried (pooch retries only ValueError and requests' errors)."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason = status, reason


class _ResumingDownloader:
    """A pooch downloader that keeps what it received in ``partial`` and resumes it on the next attempt.

    pooch calls it with a fresh temporary ``output_file`` for each attempt and checks the hash of
    what it leaves there; a cut connection raises a requests error, pooch retries, and this
    downloader asks only for the missing bytes (``Range: bytes=N-``). A server that ignores the
    Range (answers 200) is downloaded again from the start.
    """

    def __init__(self, partial: Path, timeout: float, progress: bool, label: str, check: Release | None = None):
        self.partial, self.timeout, self.progress, self.label = partial, timeout, progress, label
        self.check = check  # a release whose published checksum pooch cannot compare (a prefix)

    def __call__(self, url: str, output_file: str, pooch) -> None:  # noqa: ARG002 (pooch's signature)
        import requests
        from tqdm import tqdm

        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code == 416:  # nothing left to send: start again
                self.partial.unlink(missing_ok=True)
                raise requests.exceptions.ChunkedEncodingError("range not satisfiable; restarting")
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                raise _HTTPStatusError(response.status_code, response.reason or "")
            response.raise_for_status()
            if response.status_code != 206:
                have = 0
            length = int(response.headers.get("content-length") or 0)
            total = have + length if length else None
            with open(self.partial, "ab" if have else "wb") as out, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=self.label,
                         delay=1.0, disable=not self.progress, leave=False) as bar:
                for chunk in response.iter_content(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = self.partial.stat().st_size
        if total is not None and got != total:
            raise requests.exceptions.ChunkedEncodingError(f"connection closed after {got} of {total} bytes")
        if self.check is not None:
            digest = _file_hash(self.partial, self.check)
            if not self.check.matches(digest):
                self.partial.unlink()  # complete but wrong: a retry starts afresh
                raise _PrefixMismatch(f"{self.check.checksum[0]} of the download does not start with "
                                 f"{self.check.checksum[1]}, but got {digest}")  # pooch's wording, retried like its own
        os.replace(self.partial, output_file)


def _pull_hub(release: Release, location: Path, progress: bool) -> None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError as exc:
        raise ModelError(f"pulling {release.name} needs huggingface_hub: pip install backfire[diffusion]") from exc
    location.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release.name}.", suffix=".partial", dir=location.parent))
    if not progress:
        disable_progress_bars()
    try:
        try:
            snapshot_download(release.repo, revision=release.revision, local_dir=staging,
                              ignore_patterns=SD_INPAINT_FILES)
        except (OSError, ValueError) as exc:  # huggingface_hub's errors are OSErrors (HTTP, offline, not found)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise _failed(release, f"{type(exc).__name__}: {first}".rstrip(": ")) from exc
        if not (staging / "model_index.json").is_file():
            raise _failed(release, "the repository has no model_index.json (not a diffusers pipeline)")
        shutil.rmtree(location, ignore_errors=True)
        staging.rename(location)
    finally:
        if not progress:
            enable_progress_bars()
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Adopting a file downloaded by hand


def add(name: str, file: str | Path) -> Path:
    """Check ``file`` against the published checksum of ``name`` and put it in the cache.

    The file is copied, never moved or altered. The checksum is computed on the cache's copy
    before it takes the final name, so what lands there is what was checked.

    Raises:
        ModelError: unknown name, a hub repository, no such file, or a checksum that differs.
    """
    release = get_release(name)
    if release.on_hub:
        raise ModelError(f"{release.name} is a hub repository ({release.repo}), not one file: pull it with "
                         f"`backfire models pull {release.name}`, or name a local diffusers folder with --weights")
    source = Path(file).expanduser()
    if not source.is_file():
        raise ModelError(f"{source}: no such file")
    if release.parts:
        release = _part_of(release, source)
    location = release.location
    existed = location.parent.exists()
    tmp = location.parent / f".{location.name}.{os.getpid()}.adding"
    try:
        location.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        shutil.copyfile(source, tmp)  # a copy, not a hard link: the user's file may later be rewritten in place
        alg, expected = release.checksum
        got = _file_hash(tmp, release)
        if not release.matches(got):
            raise ModelError(f"{source}: {alg} {got} is not the published {alg} of {release.name}'s "
                             f"{release.file} ({expected}, {release.source}); nothing was changed")
        os.replace(tmp, location)
    except OSError as exc:
        raise ModelError(f"cannot add {source} as {release.name}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        _tidy(location.parent, existed)
    return location


def _part_of(release: Release, source: Path) -> Release:
    """The file of a release of several that ``source`` is, told by its checksum (people rename files)."""
    for part in release.parts:
        if part.matches(_file_hash(source, part)):
            return part
    files = "; ".join(f"{part.file} ({part.checksum[0]} {part.checksum[1]}…)" for part in release.parts)
    raise ModelError(f"{source} is none of {release.name}'s files by its checksum ({files}); nothing was changed")
