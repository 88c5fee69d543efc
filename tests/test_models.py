"""``backfire models``: pulling, checking and adopting weights, against a loopback HTTP server.

The server (a thread in this test) serves a random-weight ``big-lama.pt`` in its true format
(TorchScript, as ``backfire export --torchscript`` writes it), so the CLI round trip really loads
and runs what was pulled. MAT's and MI-GAN's files are random bytes: their loaders arrive with the
"MAT and MI-GAN" issue, and a download does not look inside the file. Nothing here touches the
user's cache (conftest points BACKFIRE_HOME at a temporary folder) or the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from backfire import io as bio
from backfire import models
from backfire.errors import ModelError
from backfire.examples import example_photo
from backfire.inpainters.fixtures import TINY_LAMA, random_lama_generator
from backfire.inpainters.lama import export_torchscript
from backfire.inpainters.registry import load_inpainter
from backfire.inpainters.specs import Release
from tests.conftest import photo_folder, run_cli


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.log: list[tuple[str, str | None]] = []
        self.stop = threading.Event()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def requests_for(self, name: str) -> list[str | None]:
        """The Range header of each request for ``name`` (None: a whole-file request)."""
        return [rng for path, rng in self.log if path == f"/{name}"]


class _Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-``; ``/hang`` never answers, ``/stall`` stops half-way through big-lama.pt
    and waits; a name in ``cut_once`` drops the connection half-way through its first answer."""

    server: _Server

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        name = self.path.lstrip("/")
        if name == "hang":
            srv.stop.wait(10)
            return
        if name == "stall":  # answers, sends half the file, then goes quiet
            data = srv.files["big-lama.pt"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            srv.stop.wait(10)
            return
        if name not in srv.files:
            self.send_error(404)
            return
        data = srv.files[name]
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if name in srv.cut_once:
            srv.cut_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def lama_file(tmp_path_factory) -> bytes:
    """A random-weight big-lama.pt: TorchScript called as model(image, mask), like IOPaint's."""
    path = tmp_path_factory.mktemp("release") / "big-lama.pt"
    export_torchscript(random_lama_generator(TINY_LAMA, seed=3), path)
    return path.read_bytes()


@pytest.fixture
def server(lama_file):
    srv = _Server()
    srv.files = {"big-lama.pt": lama_file, "Places_512_FullData_G.pth": os.urandom(150_000),
                 "migan_traced.pt": os.urandom(80_000)}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _mirror(tmp_path: Path, monkeypatch, tables: dict[str, dict[str, str]]) -> Path:
    """Write a BACKFIRE_MODELS registry file with ``tables`` and point the environment at it."""
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f'{key} = "{value}"' for key, value in table.items()]
    path = tmp_path / "registry.toml"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("BACKFIRE_MODELS", str(path))
    return path


@pytest.fixture
def mirror(server, tmp_path, monkeypatch) -> _Server:
    """The registry pointed at the loopback server, with the served files' true md5s."""
    _mirror(tmp_path, monkeypatch, {
        "lama": {"url": server.url("big-lama.pt"), "md5": _md5(server.files["big-lama.pt"])},
        "mat": {"url": server.url("Places_512_FullData_G.pth"),
                "md5": _md5(server.files["Places_512_FullData_G.pth"])},
        "migan": {"url": server.url("migan_traced.pt"),
                  "sha256": hashlib.sha256(server.files["migan_traced.pt"]).hexdigest()},
    })
    return server


def _cache_files() -> list[str]:
    root = models.cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --------------------------------------------------------------------------------------------
# Pulling


def test_pull_checks_the_file_and_a_second_pull_asks_nothing(mirror, model_cache):
    [path] = models.pull(["lama"], progress=False)
    assert path == model_cache / "models" / "lama" / "big-lama.pt"
    assert path.read_bytes() == mirror.files["big-lama.pt"]
    assert mirror.requests_for("big-lama.pt") == [None]
    assert models.pull(["lama"], progress=False) == [path]
    assert len(mirror.requests_for("big-lama.pt")) == 1  # cache hit: no second request
    assert models.path("lama") == path and models.is_pulled("lama")
    assert _cache_files() == ["lama", "lama/big-lama.pt"]  # no temporary or partial file left


def test_pull_several_with_md5_and_sha256(mirror):
    paths = models.pull(["mat", "migan"], progress=False)
    assert [p.name for p in paths] == ["Places_512_FullData_G.pth", "migan_traced.pt"]
    assert paths[1].read_bytes() == mirror.files["migan_traced.pt"]


def test_a_damaged_cached_file_is_pulled_again(mirror):
    [path] = models.pull(["lama"], progress=False)
    path.write_bytes(b"damaged")
    models.pull(["lama"], progress=False)
    assert path.read_bytes() == mirror.files["big-lama.pt"]
    assert len(mirror.requests_for("big-lama.pt")) == 2


def test_a_cut_connection_is_resumed_and_the_result_checked(mirror):
    mirror.cut_once.add("big-lama.pt")
    [path] = models.pull(["lama"], progress=False, retries=1)
    assert path.read_bytes() == mirror.files["big-lama.pt"]
    first, second = mirror.requests_for("big-lama.pt")
    assert first is None
    received = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < received < len(mirror.files["big-lama.pt"])  # asked only for the missing bytes
    assert _cache_files() == ["lama", "lama/big-lama.pt"]


def test_a_cut_connection_without_retries_leaves_nothing(mirror):
    mirror.cut_once.add("big-lama.pt")
    with pytest.raises(models.DownloadError, match=r"connection broke after \d+ bytes") as info:
        models.pull(["lama"], progress=False, retries=0)
    _assert_one_line_way_out(info.value, mirror.url("big-lama.pt"))
    assert _cache_files() == []


def test_checksum_mismatch_is_refused_and_the_cache_stays_clean(server, tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": server.url("big-lama.pt"), "md5": "0" * 32}})
    with pytest.raises(models.DownloadError, match=r"checksum mismatch \(md5 expected 0{32}, got [0-9a-f]{32}\)") \
            as info:
        models.pull(["lama"], progress=False, retries=0)
    _assert_one_line_way_out(info.value, server.url("big-lama.pt"))
    assert _cache_files() == []
    assert not models.is_pulled("lama")


def test_http_404_is_not_retried_and_leaves_nothing(server, tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": server.url("gone.pt"), "md5": "0" * 32}})
    with pytest.raises(models.DownloadError, match="HTTP 404") as info:
        models.pull(["lama"], progress=False, retries=3)
    _assert_one_line_way_out(info.value, server.url("gone.pt"))
    assert len(server.requests_for("gone.pt")) == 1
    assert _cache_files() == []


def test_a_server_that_never_answers_times_out(server, tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": server.url("hang"), "md5": "0" * 32}})
    with pytest.raises(models.DownloadError, match=r"no answer within 0\.3 s") as info:
        models.pull(["lama"], progress=False, timeout=0.3, retries=0)
    _assert_one_line_way_out(info.value, server.url("hang"))
    assert _cache_files() == []


def test_an_unreachable_host_is_one_line(tmp_path, monkeypatch):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/big-lama.pt"
    _mirror(tmp_path, monkeypatch, {"lama": {"url": url, "md5": "0" * 32}})
    with pytest.raises(models.DownloadError, match=f"could not reach 127.0.0.1:{port}: connection refused") as info:
        models.pull(["lama"], progress=False, retries=0)
    _assert_one_line_way_out(info.value, url)


def test_a_server_that_stalls_mid_file_is_a_timeout_not_a_checksum_mismatch(server, tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": server.url("stall"), "md5": _md5(server.files["big-lama.pt"])}})
    host = f"127.0.0.1:{server.server_address[1]}"
    with pytest.raises(models.DownloadError, match=rf"could not reach {host}: no answer within 0\.3 s") as info:
        models.pull(["lama"], progress=False, timeout=0.3, retries=0)
    assert "checksum" not in str(info.value) and "bytes" in str(info.value)  # how far it got
    _assert_one_line_way_out(info.value, server.url("stall"))
    assert _cache_files() == []


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_cli_pull_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(capsys, mirror, timeout):
    code, out, err = run_cli(capsys, "models", "pull", "lama", "--timeout", timeout, "--quiet")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--timeout" in err and "checksum" not in err
    assert mirror.log == [] and _cache_files() == []  # refused before asking the server anything
    with pytest.raises(ValueError, match="timeout"):  # the API refuses it too, in the same words
        models.pull(["lama"], progress=False, timeout=float(timeout))
    assert mirror.log == []


def _assert_one_line_way_out(error: Exception, url: str) -> None:
    message = str(error)
    assert "\n" not in message and url in message and "backfire models add lama FILE" in message


def test_hub_pull_failure_is_one_line_and_leaves_nothing(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub refuses every request, as off-line
    with pytest.raises(models.DownloadError, match="cannot pull sd-inpaint.*stable-diffusion-inpainting") as info:
        models.pull(["sd-inpaint"], progress=False)
    assert "\n" not in str(info.value) and "--weights" in str(info.value)
    assert [p for p in _cache_files() if p != "sd-inpaint"] == [] and not models.is_pulled("sd-inpaint")


# --------------------------------------------------------------------------------------------
# Registry, cache location


def test_the_builtin_registry_pins_iopaints_files():
    lama = models.RELEASES["lama"]
    assert lama.file == "big-lama.pt" and lama.md5 == "e3aa4aaa15225a33ec84f9f4bc47e500"
    assert lama.url.endswith("/add_big_lama/big-lama.pt")
    assert models.RELEASES["mat"].md5 == "8ca927835fa3f5e21d65ffcb165377ed"
    assert models.RELEASES["migan"].md5 == "76eb3b1a71c400ee3290524f7a11b89c"
    sd = models.RELEASES["sd-inpaint"]
    assert sd.on_hub and sd.repo.endswith("/stable-diffusion-inpainting") and len(sd.revision) == 40


def test_the_override_file_replaces_only_the_entries_it_names(tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": "http://127.0.0.1:9/big-lama.pt", "sha256": "ab" * 32}})
    releases = models.registry()
    assert releases["lama"].url == "http://127.0.0.1:9/big-lama.pt"
    assert releases["lama"].known_hash == "sha256:" + "ab" * 32 and releases["lama"].file == "big-lama.pt"
    assert releases["mat"] == models.RELEASES["mat"]


@pytest.mark.parametrize("text, message", [
    ("[lama\nurl = 1", "not valid TOML"),
    ('[nope]\nurl = "http://x/y"\nmd5 = "' + "0" * 32 + '"', r"\[nope\] is not a model backfire knows"),
    ('[lama]\nurl = "http://x/y"', "exactly one of md5, sha256"),
    ('[lama]\nurl = "http://x/y"\nmd5 = "abc"', "md5 must be 32 hex digits"),
    ('[lama]\nurl = "http://x/y"\nmd5 = "' + "0" * 32 + '"\nmirror = "x"', "has no key mirror"),
])
def test_a_bad_override_file_is_one_line(tmp_path, monkeypatch, text, message):
    path = tmp_path / "registry.toml"
    path.write_text(text)
    monkeypatch.setenv("BACKFIRE_MODELS", str(path))
    with pytest.raises(ModelError, match=message) as info:
        models.pull(["lama"], progress=False)
    assert "\n" not in str(info.value) and "BACKFIRE_MODELS=" in str(info.value)


def test_cache_location_honours_backfire_home_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKFIRE_HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("BACKFIRE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform == "linux":  # platformdirs follows XDG on Linux only
        assert models.cache_dir() == tmp_path / "xdg" / "backfire" / "models"


def test_list_path_and_remove(mirror):
    rows = {row.release.name: row for row in models.list_models()}
    assert set(rows) == {"lama", "mat", "migan", "sd-inpaint", "clip-vit-b-32", "lpips-alex", "lpips-vgg"}
    assert not any(row.pulled for row in rows.values())
    assert rows["lama"].release.licence == "Apache-2.0" and rows["lama"].release.size
    with pytest.raises(models.NotPulledError, match="backfire models pull lama"):
        models.path("lama")
    models.pull(["lama"], progress=False)
    assert {row.release.name for row in models.list_models() if row.pulled} == {"lama"}
    assert models.remove("lama") is True
    assert not models.is_pulled("lama") and _cache_files() == []
    assert models.remove("lama") is False
    with pytest.raises(ModelError, match="no published weights for model 'backfire-s'"):
        models.path("backfire-s")


# --------------------------------------------------------------------------------------------
# Adopting a file downloaded by hand


def test_add_adopts_a_good_file_without_touching_it(mirror, tmp_path):
    mine = tmp_path / "downloads" / "big-lama.pt"
    mine.parent.mkdir()
    mine.write_bytes(mirror.files["big-lama.pt"])
    before = mine.stat()
    path = models.add("lama", mine)
    assert path == models.path("lama") and path.read_bytes() == mine.read_bytes()
    after = mine.stat()
    assert mine.is_file() and (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert mirror.log == []  # adopted, not downloaded
    assert _cache_files() == ["lama", "lama/big-lama.pt"]


def test_add_refuses_a_file_with_another_checksum(tmp_path):
    mine = tmp_path / "big-lama.pt"
    mine.write_bytes(b"not the published file")
    with pytest.raises(ModelError, match=r"md5 [0-9a-f]{32} is not the published md5 of lama") as info:
        models.add("lama", mine)
    assert "\n" not in str(info.value)
    assert mine.read_bytes() == b"not the published file" and _cache_files() == []
    with pytest.raises(ModelError, match="no such file"):
        models.add("lama", tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="hub repository"):
        models.add("sd-inpaint", mine)


# --------------------------------------------------------------------------------------------
# The command line, and the registry using what was pulled


def test_load_inpainter_uses_the_pulled_file(mirror, one_thread):
    with pytest.raises(models.NotPulledError, match="backfire models pull lama.*--weights"):
        load_inpainter("lama", device="cpu")
    models.pull(["lama"], progress=False)
    inpainter = load_inpainter("lama", device="cpu")
    image, mask = example_photo(48, 40)
    image, mask = image[None], mask[None, None]
    with torch.no_grad():
        out = inpainter(image, mask)
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_cli_pull_then_protect_without_weights(capsys, mirror, tmp_path, one_thread):
    image, mask = example_photo(48, 40)
    bio.save_image(image, tmp_path / "photo.png")
    bio.save_mask(mask, tmp_path / "m.png")
    protect = ["protect", tmp_path / "photo.png", "--mask", tmp_path / "m.png", "-o", tmp_path / "out.png",
               "--model", "lama", "--steps", "1", "--device", "cpu", "--quiet"]
    code, _, err = run_cli(capsys, *protect)
    assert code == 2 and "backfire models pull lama" in err and len(err.strip().splitlines()) == 1

    code, out, err = run_cli(capsys, "models", "pull", "lama", "--quiet")
    assert code == 0, err
    assert out.strip() == str(models.path("lama")) and "pulling lama" in err
    code, out, err = run_cli(capsys, *protect)
    assert code == 0, err
    assert (tmp_path / "out.png").is_file() and "verdict:" in out

    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0
    inpainters, measures = out.split("\n\n")
    lines = {line.split()[0]: line.split()[1] for line in inpainters.splitlines()[2:] if not line.startswith(" ")}
    from backfire.inpainters.registry import shipped

    assert lines == {"lama": "yes", "mat": "no", "migan": "no", "sd-inpaint": "no", **dict.fromkeys(shipped(), "shipped")}
    lines = {line.split()[0]: line.split()[1] for line in measures.splitlines()[1:] if not line.startswith(" ")}
    assert lines == {"clip-vit-b-32": "no", "lpips-alex": "no", "lpips-vgg": "no"}
    code, out, _ = run_cli(capsys, "models", "path", "lama")
    assert code == 0 and out.strip() == str(models.path("lama"))
    code, out, _ = run_cli(capsys, "models", "remove", "lama")
    assert code == 0 and "removed" in out and not models.is_pulled("lama")
    code, _, err = run_cli(capsys, "models", "path", "lama")
    assert code == 2 and "backfire models pull lama" in err


def test_cli_failed_pull_and_bad_add_exit_2_with_one_line(capsys, server, tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lama": {"url": server.url("gone.pt"), "md5": "0" * 32}})
    code, out, err = run_cli(capsys, "models", "pull", "lama", "--quiet")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 2  # "pulling lama ..." then the error
    assert "HTTP 404" in err and "backfire models add lama FILE" in err
    (tmp_path / "x.pt").write_bytes(b"x")
    code, _, err = run_cli(capsys, "models", "add", "lama", tmp_path / "x.pt")
    assert code == 2 and "is not the published md5" in err
    code, _, err = run_cli(capsys, "models", "remove", "lama", "nope")
    assert code == 2 and "nope" in err


def test_auto_protects_against_pulled_big_lama_else_backfire_s_with_a_notice(capsys, mirror, tmp_path, one_thread):
    from backfire.inpainters.registry import STAND_IN, resolve_models

    assert resolve_models("auto") == ([STAND_IN], resolve_models("auto")[1]) and "models pull lama" in \
        resolve_models("auto")[1]
    assert resolve_models("all")[0] == [STAND_IN]
    models.pull(["lama"], progress=False)
    assert resolve_models("auto") == (["lama"], None) and resolve_models("all") == (["lama"], None)
    image, mask = example_photo(48, 40)
    bio.save_image(image, tmp_path / "photo.png")
    bio.save_mask(mask, tmp_path / "m.png")
    code, out, err = run_cli(capsys, "protect", tmp_path / "photo.png", "--mask", tmp_path / "m.png", "-o",
                             tmp_path / "out.png", "--steps", "1", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "lama through IOPaint" in out and "stand-in" not in err


# --------------------------------------------------------------------------------------------
# The measures' networks: pulled and listed like the models, never offered as inpainters


@pytest.fixture
def metric_mirror(server, tmp_path, monkeypatch, clip_file, lpips_files) -> _Server:
    """The loopback server with random-weight CLIP and LPIPS files of the true formats, and the registry
    pointed at them (the measures' releases of several files get one table per file)."""
    served = {"ViT-B-32.pt": clip_file, "alexnet-owt-7be5be79.pth": lpips_files["backbone"],
              "alex.pth": lpips_files["linear"]}
    server.files.update({name: path.read_bytes() for name, path in served.items()})
    _mirror(tmp_path, monkeypatch, {
        name: {"url": server.url(file), "sha256": hashlib.sha256(server.files[file]).hexdigest()}
        for name, file in [("clip-vit-b-32", "ViT-B-32.pt"), ('lpips-alex."alexnet-owt-7be5be79.pth"',
                                                               "alexnet-owt-7be5be79.pth"),
                           ('lpips-alex."alex.pth"', "alex.pth")]})
    return server


def test_the_measures_weights_are_releases_but_not_inpainters(capsys, files, tmp_path):
    from backfire.inpainters.registry import available_models, resolve_models
    from backfire.metric_weights import METRIC_WEIGHTS

    assert set(METRIC_WEIGHTS) == {"clip-vit-b-32", "lpips-alex", "lpips-vgg"} <= set(models.RELEASES)
    assert not set(METRIC_WEIGHTS) & set(available_models())
    clip = METRIC_WEIGHTS["clip-vit-b-32"]  # OpenAI's URL carries the file's SHA-256, which clip.load checks
    assert clip.url.split("/")[-2] == clip.sha256 and len(clip.sha256) == 64 and clip.known_hash
    alex = METRIC_WEIGHTS["lpips-alex"]
    assert [p.file for p in alex.parts] == ["alexnet-owt-7be5be79.pth", "alex.pth"]
    assert all(p.name == "lpips-alex" for p in alex.parts) and alex.parts[0].known_hash is None  # a prefix
    image, mask = files
    code, _, err = run_cli(capsys, "edit", image, "--mask", mask, "-o", tmp_path / "y.png", "--model", "clip-vit-b-32")
    assert code == 2 and "unknown inpainting model 'clip-vit-b-32'" in err
    assert "clip-vit-b-32" not in resolve_models("all")[0]


def test_a_release_of_several_files_pulls_each_checked_and_asks_nothing_twice(metric_mirror):
    [folder] = models.pull(["lpips-alex"], progress=False)
    assert folder == models.path("lpips-alex") and models.is_pulled("lpips-alex")
    assert (folder / "alex.pth").read_bytes() == metric_mirror.files["alex.pth"]
    assert _cache_files() == ["lpips-alex", "lpips-alex/alex.pth", "lpips-alex/alexnet-owt-7be5be79.pth"]
    models.pull(["lpips-alex"], progress=False)
    assert len(metric_mirror.requests_for("alex.pth")) == 1
    (folder / "alex.pth").unlink()
    with pytest.raises(models.NotPulledError, match=r"backfire models pull lpips-alex.*alexnet-owt-7be5be79.pth, "
                                                    r"alex.pth"):
        models.path("lpips-alex")
    models.pull(["lpips-alex"], progress=False)  # only the missing file is fetched again
    assert len(metric_mirror.requests_for("alex.pth")) == 2
    assert len(metric_mirror.requests_for("alexnet-owt-7be5be79.pth")) == 1


def test_a_published_checksum_prefix_is_checked_before_the_file_lands(server, monkeypatch):
    """torchvision publishes 8 hex digits of its files' SHA-256 (in their names): those are checked."""
    data = os.urandom(50_000)
    server.files["alexnet-owt-00000000.pth"] = data
    digest = hashlib.sha256(data).hexdigest()
    part = Release("backbone", "torchvision", "50 kB", "BSD-3-Clause", file="backbone.pth",
                   url=server.url("alexnet-owt-00000000.pth"), sha256=digest[:8])
    monkeypatch.setitem(models.RELEASES, "test-prefix", Release("test", "", "", "", parts=(part,), name="test-prefix"))
    [folder] = models.pull(["test-prefix"], progress=False)
    assert (folder / "backbone.pth").read_bytes() == data
    (folder / "backbone.pth").write_bytes(b"damaged")  # a file that fails its prefix is pulled again
    models.pull(["test-prefix"], progress=False)
    assert (folder / "backbone.pth").read_bytes() == data
    models.remove("test-prefix")
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    monkeypatch.setitem(models.RELEASES, "test-prefix", Release(
        "test", "", "", "", parts=(Release("backbone", "", "", "", file="backbone.pth", url=part.url, sha256=wrong),),
        name="test-prefix"))
    with pytest.raises(models.DownloadError, match=rf"checksum mismatch \(sha256 expected {wrong}, got {digest}\)"):
        models.pull(["test-prefix"], progress=False, retries=1)
    assert _cache_files() == [] and len(server.requests_for("alexnet-owt-00000000.pth")) == 2 + 2


def test_add_finds_the_file_of_a_release_of_several_by_its_checksum(metric_mirror, tmp_path, lpips_files):
    renamed = tmp_path / "downloaded.bin"
    renamed.write_bytes(lpips_files["linear"].read_bytes())
    assert models.add("lpips-alex", renamed) == models.cache_dir() / "lpips-alex" / "alex.pth"
    assert not models.is_pulled("lpips-alex")  # one of its two files
    models.add("lpips-alex", lpips_files["backbone"])
    assert models.is_pulled("lpips-alex") and metric_mirror.log == []
    with pytest.raises(ModelError, match=r"is none of lpips-alex's files by its checksum \(alexnet-owt-7be5be79.pth "
                                         r"\(sha256 [0-9a-f]{64}…\); alex.pth"):
        models.add("lpips-alex", _write(tmp_path / "x.pth", b"other"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_override_of_a_release_of_several_files_names_each_file(tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, {"lpips-alex": {"url": "http://mirror/alex.pth", "sha256": "a" * 64}})
    with pytest.raises(ModelError, match=r'is several files; give one table per file, \[lpips-alex."FILE"\] with '
                                         r"FILE one of alexnet-owt-7be5be79.pth, alex.pth"):
        models.registry()
    _mirror(tmp_path, monkeypatch, {'lpips-alex."alex.pth"': {"url": "http://mirror/alex.pth", "sha256": "a" * 64}})
    backbone, linear = models.registry()["lpips-alex"].parts
    assert linear.url == "http://mirror/alex.pth" and linear.sha256 == "a" * 64 and linear.name == "lpips-alex"
    assert backbone == models.RELEASES["lpips-alex"].parts[0]


def test_cli_pull_then_evaluate_computes_clip_fid_and_lpips(capsys, metric_mirror, tmp_path, weights, one_thread):
    folder = photo_folder(tmp_path / "photos", 2)
    code, out, err = run_cli(capsys, "models", "pull", "clip-vit-b-32", "lpips-alex", "--quiet")
    assert code == 0, err
    assert out.split() == [str(models.path("clip-vit-b-32")), str(models.path("lpips-alex"))]
    assert "pulling lpips-alex: alex.pth" in err
    code, out, _ = run_cli(capsys, "models", "list")
    measures = out.split("\n\n")[1]
    assert {line.split()[0]: line.split()[1] for line in measures.splitlines()[1:] if not line.startswith(" ")} == \
        {"clip-vit-b-32": "yes", "lpips-alex": "yes", "lpips-vgg": "no"}
    code, _, err = run_cli(capsys, "evaluate", folder, "--model", "lama", "--weights", weights, "--device", "cpu",
                           "--steps", "1", "--families", "exact", "ring", "--no-fid", "--quiet")
    assert code == 0, err
    result = tmp_path / "photos-evaluation"
    summary = (result / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in summary.splitlines() if line.startswith(("| CLIP-FID", "| LPIPS"))}
    clip = next(v for k, v in rows.items() if k.startswith("CLIP-FID"))
    assert float(clip[1]) >= 0 and float(rows["LPIPS (AlexNet)"][1]) > 0, rows
    used = json.loads((result / "config.json").read_text())["set_metrics"]["used"]
    assert used["LPIPS (AlexNet)"]["linear"]["from"] == "pulled lpips-alex"
    assert used["LPIPS (AlexNet)"]["linear"]["published"] is False  # the mirror's file is not lpips's
    assert next(v for k, v in used.items() if k.startswith("CLIP-FID"))["path"] == str(models.path("clip-vit-b-32"))
