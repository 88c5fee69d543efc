"""Folder runs on Ray, against a real Ray runtime (never a mock).

Every Ray process these tests start, and every client that talks to one, runs inside a network namespace of
the test's own (``unshare --net``, loopback only: Ray would otherwise listen on the machine's address), with
usage statistics off, a Ray temp folder of its own, ``ray stop --force`` at the end and every subprocess
bounded in time. Tiny photos, two optimisation steps, one torch thread per worker."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backfire import ray_runner
from tests.conftest import lama_args, photo_folder, run_cli

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
PORT = 6390


def _namespace_problem() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    try:
        probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", "ip link set lo up"],
                               capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "unshare did not answer in 30 s"
    return None if probe.returncode == 0 else f"unshare --net is not permitted here (root needed): {probe.stderr.strip()}"


def _needs_namespace() -> None:
    pytest.importorskip("ray", reason="the ray package is not installed (pip install 'backfire[ray]')")
    problem = _namespace_problem()
    if problem:
        pytest.skip(f"no private network namespace for Ray: {problem}")


@pytest.fixture
def ray_env(tmp_path):
    """The environment of a namespace's processes: usage statistics off, this checkout first on the path (Ray's
    workers import it too), one torch thread, a home and a Ray temp folder of their own (short: socket paths)."""
    temp = Path(tempfile.mkdtemp(prefix="bf-ray-", dir="/tmp"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BACKFIRE_RAY"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HOME=str(home),
               RAY_TMPDIR=str(temp))
    yield env
    shutil.rmtree(temp, ignore_errors=True)


def _in_namespace(script: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``script`` (bash) in a network and PID namespace of its own, loopback up; Ray stopped at the end (and
    whatever is left ends with the namespace)."""
    wrapped = f"ip link set lo up; {script}\nrc=$?; {RAY} stop --force >/dev/null 2>&1; exit $rc"
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", wrapped], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _cli(*args) -> str:
    """``backfire ARGS`` as a shell command line, run with this checkout."""
    return shlex.join([sys.executable, "-m", "backfire.cli", *map(str, args)])


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def _cases(folder: Path) -> list[dict]:
    with open(folder / "cases.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_a_local_runtime_survives_a_killed_worker_and_writes_what_the_folder_mode_writes(capsys, tmp_path, weights,
                                                                                         ray_env, one_thread):
    _needs_namespace()
    src = photo_folder(tmp_path / "in", 3)
    flags = ("--steps", "2", "--quiet", *lama_args(weights))
    evaluating = ("--families", "exact", "ring", "--no-fid", "--limit", "2")
    code, _, err = run_cli(capsys, "protect", src, "-o", tmp_path / "local", *flags)  # one thread, as the workers
    assert code == 0, err
    code, _, err = run_cli(capsys, "evaluate", src, "--out", tmp_path / "ev-local", *flags, *evaluating)
    assert code == 0, err
    # p1's worker ends its own process on the first attempt: a real crash, retried on a fresh worker
    ray_env[ray_runner.CRASH_ON] = "p1.png"
    on_ray = ("--ray", "--workers", "2", "--cpus-per-worker", "1")
    run = _in_namespace(_cli("protect", src, "-o", tmp_path / "ray", *flags, *on_ray) + " && " +
                        _cli("evaluate", src, "--out", tmp_path / "ev-ray", *flags, *evaluating, *on_ray),
                        ray_env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _cases(tmp_path / "ev-ray") == _cases(tmp_path / "ev-local")  # each case on a worker, the same rows
    for png in (tmp_path / "ev-local" / "images").glob("*.png"):
        assert (tmp_path / "ev-ray" / "images" / png.name).read_bytes() == png.read_bytes()
    assert "the Ray worker running p1.png died; running it again (retry 1 of 2)" in run.stderr
    local, ray = _rows(tmp_path / "local" / "batch.csv"), _rows(tmp_path / "ray" / "batch.csv")
    assert {name: r["retries"] for name, r in ray.items()} == {"p0.png": "0", "p1.png": "1", "p2.png": "0"}
    assert all(r["retries"] == "" for r in local.values())  # a run here has no workers to lose
    same = [c for c in next(iter(local.values())) if c not in ("output", "retries")]
    assert {n: [r[c] for c in same] for n, r in ray.items()} == {n: [r[c] for c in same] for n, r in local.items()}
    for name in ("p0", "p1", "p2"):
        for ext in (".png", ".preview.png"):  # byte for byte
            assert (tmp_path / "ray" / f"{name}{ext}").read_bytes() == (tmp_path / "local" / f"{name}{ext}").read_bytes()
        mine, theirs = (json.loads((tmp_path / d / f"{name}.json").read_text()) for d in ("local", "ray"))
        for record in (mine, theirs):
            record.pop("seconds"), record.pop("protected_image")
        assert mine == theirs
    assert not (Path(ray_env["HOME"]) / ".ray").exists()  # the runtime's token was never written down


DRIVER = """
import json, signal, subprocess, sys, time
from pathlib import Path
out, command = Path(sys.argv[1]), sys.argv[2:]
first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
deadline = time.monotonic() + 180
while not (out / "p0.json").exists() and first.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
first.send_signal(signal.SIGINT)  # Ctrl-C once the first photo is done
_, first_err = first.communicate(timeout=120)
kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}
second = subprocess.run(command, capture_output=True, text=True, timeout=180)
print(json.dumps({"first": first.returncode, "first_err": first_err, "kept": kept, "second": second.returncode,
                  "second_err": second.stderr,
                  "after": {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}}))
"""


def test_a_run_on_a_cluster_interrupted_and_started_again_does_only_the_missing_photos(tmp_path, weights, ray_env):
    _needs_namespace()
    src, out = photo_folder(tmp_path / "in", 4), tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    head = (f"{RAY} start --head --port {PORT} --num-cpus 2 --include-dashboard false --disable-usage-stats "
            f">/dev/null || exit 9")
    command = _cli("protect", src, "-o", out, "--steps", "2", "--quiet", *lama_args(weights),
                   "--ray", f"127.0.0.1:{PORT}", "--workers", "1")
    run = _in_namespace(f"{head}\n{sys.executable} {driver} {out} {command}", ray_env, timeout=420)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first"] == 130, result["first_err"][-2000:]
    complete = sorted(n for n in ("p0", "p1", "p2", "p3")
                      if all(f"{n}{ext}" in result["kept"] for ext in (".png", ".json", ".preview.png")))
    assert "p0" in complete and len(complete) < 4, result["kept"]  # interrupted part way
    assert not any(name.startswith(n) for name in result["kept"] for n in {"p0", "p1", "p2", "p3"} - set(complete))
    assert result["second"] == 0, result["second_err"][-2000:]
    assert f"{len(complete)} of 4 photos already done with these settings" in result["second_err"]
    after = result["after"]
    assert all(after[k] == v for k, v in result["kept"].items())  # the finished photos untouched
    assert set(_rows(out / "batch.csv")) == {"p0.png", "p1.png", "p2.png", "p3.png"}
    assert all((out / f"{n}{ext}").is_file() for n in ("p0", "p1", "p2", "p3") for ext in (".png", ".preview.png"))


AUTH = """
import os, subprocess, sys
from pathlib import Path
from backfire import jobs, ray_runner
code = "import ray; ray.init(address='auto'); print('CONNECTED')"
with ray_runner.RayRunner(jobs.Request(), ray_runner.RaySettings(), Path(sys.argv[1])):
    token = os.environ["RAY_AUTH_TOKEN"]
    outsider = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([sys.executable, "-c", code], env=outsider, capture_output=True, text=True, timeout=120)
    allowed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
written = [str(p) for root in (Path(os.environ["HOME"]), Path(os.environ["RAY_TMPDIR"])) for p in root.rglob("*")
           if p.is_file() and token.encode() in p.read_bytes()]
print("outsider", "CONNECTED" in refused.stdout, "insider", "CONNECTED" in allowed.stdout, "files", written)
"""


def test_the_local_runtime_refuses_a_client_without_its_token_and_never_writes_the_token(tmp_path, ray_env):
    _needs_namespace()
    script = tmp_path / "auth.py"
    script.write_text(AUTH)
    run = _in_namespace(f"{sys.executable} {script} {tmp_path}", ray_env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "outsider False insider True files []", run.stderr[-2000:]


def test_ray_flags_are_checked_in_one_line_before_any_work(capsys, monkeypatch, tmp_path, files):
    src, out = photo_folder(tmp_path / "in", 1), tmp_path / "out"
    monkeypatch.setitem(sys.modules, "ray", None)  # the package missing: `import ray` fails as it would
    code, _, err = run_cli(capsys, "protect", src, "-o", out, "--ray")
    assert code == 2 and err == "backfire: error: --ray needs the ray package: install it with pip install " \
                                "'backfire[ray]'\n"
    code, _, err = run_cli(capsys, "evaluate", src, "--out", tmp_path / "ev", "--ray", "127.0.0.1:6390")
    assert code == 2 and "pip install 'backfire[ray]'" in err and err.count("\n") == 1
    photo, mask = files
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "one.png", "--ray")
    assert code == 2 and "--ray runs a folder" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "protect", src, "-o", out, "--workers", "2")
    assert code == 2 and "--workers sizes a run on Ray: add --ray" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "protect", src, "-o", out, "--ray=not an address")
    assert code == 2 and "give no address" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "ev").exists() and not (tmp_path / "one.png").exists()
