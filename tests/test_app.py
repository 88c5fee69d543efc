"""``backfire app``: the page in a real headless browser, its API through gradio_client, bad uploads, batches.

The server is the real command (``python -m backfire.cli app``) in a subprocess on a free port; the photo is
the project's own 64×48 example; protection runs backfire-s for 2 steps. Set ``BACKFIRE_APP_SCREENSHOT=PATH``
to also write the browser test's screenshot there (docs/app-screenshot.png is made that way).
"""

from __future__ import annotations

import csv
import importlib.util
import io as _io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from backfire import cli, io
from backfire.app import batch, service
from backfire.examples import example_photo

ROOT = Path(__file__).resolve().parents[1]
HAS_GRADIO = importlib.util.find_spec("gradio") is not None and importlib.util.find_spec("gradio_client") is not None
HAS_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()), None)
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason='the app extra is not installed: pip install -e ".[app]"')
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
SCREENSHOT_BYTES = 200_000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("app-inputs")
    image, mask = example_photo(64, 48)
    paths = {"photo": folder / "photo.png", "mask": folder / "photo_mask.png", "text": folder / "notes.png",
             "huge": folder / "huge.png"}
    io.save_image(image, paths["photo"])
    io.save_mask(mask, paths["mask"])
    paths["text"].write_text("this is a text file, not a picture\n")
    Image.new("L", (8000, 5001)).save(paths["huge"])  # 40.008 MP: over the CLI's 40 MP cap, a few KB on disk
    return paths


# ------------------------------------------------------------------------------ without Gradio

def test_model_menu_starts_with_the_default_and_lists_every_registry_model():
    choices = service.available_choices()
    assert choices[0] == cli.DEFAULT_MODEL and set(choices) >= {"backfire-s", "lama", "sd-inpaint"}


def test_batch_protects_pairs_and_zips_reports_with_a_csv_row_per_photo(files, tmp_path, one_thread):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # a zip with a folder inside, and one photo without a mask
        zf.write(files["photo"], "set/second.png")
        zf.write(files["mask"], "set/second_mask.png")
        zf.write(files["photo"], "set/lonely.png")
        zf.writestr("__MACOSX/._second.png", b"junk")
    result = batch.run([files["photo"], files["mask"], archive], tmp_path / "work",
                       service.Request.of(steps=1, device="cpu"))
    with zipfile.ZipFile(result.archive) as zf:
        names = sorted(zf.namelist())
        rows = list(csv.DictReader(_io.StringIO(zf.read(batch.CSV_NAME).decode())))
        saved = Image.open(_io.BytesIO(zf.read("photo.png")))
    assert names == ["photo.json", "photo.png", "photo_mask.png", "second.json", "second.png", "second_mask.png",
                     batch.CSV_NAME]
    assert saved.size == (64, 48)
    by_image = {r["image"]: r for r in rows}
    assert set(by_image) == {"photo.png", "second.png", "lonely.png"} and result.failures == 1
    assert "no mask lonely_mask.png" in by_image["lonely.png"]["error"]
    assert by_image["photo.png"]["model"] == "backfire-s" and by_image["photo.png"]["error"] == ""
    assert by_image["photo.png"]["protected"] in ("True", "False") and float(by_image["photo.png"]["psnr_db"]) > 25


@pytest.fixture(scope="module")
def mixed_batch(files, tmp_path_factory, one_thread) -> tuple[batch.BatchResult, Path]:
    """One batch run (no detector) of a good pair, a text file named like a photo, the same with a real mask,
    and a photo without a mask; and the folder its zip was unpacked into, as a user would."""
    work = tmp_path_factory.mktemp("mixed-batch")
    bad_mask = work / "uploads" / "fake_mask.png"
    bad_mask.parent.mkdir()
    shutil.copyfile(files["mask"], bad_mask)
    lonely = shutil.copyfile(files["photo"], work / "uploads" / "lonely.png")
    fake = shutil.copyfile(files["text"], work / "uploads" / "fake.png")
    result = batch.run([files["photo"], files["mask"], files["text"], fake, bad_mask, lonely], work / "work",
                       service.Request.of(steps=1, device="cpu"))
    with zipfile.ZipFile(result.archive) as zf:
        zf.extractall(work / "unzipped")
    return result, work / "unzipped"


def test_batch_reports_a_file_that_is_no_image_as_not_an_image(mixed_batch):
    """Issue 24 (9): a text file uploaded as notes.png was reported as "no mask …"."""
    by_image = {r["image"]: r for r in mixed_batch[0].rows}
    assert by_image["notes.png"]["error"] == "not an image: notes.png"
    assert by_image["fake.png"]["error"] == "not an image: fake.png"  # its mask is fine: the photo is not
    assert by_image["lonely.png"]["error"].startswith("no mask lonely_mask.png")  # a real photo: its mask missing


def test_batch_zip_holds_each_mask_so_verify_runs_again_on_the_results(mixed_batch, files, capsys):
    """Issue 24 (9): the CSV named masks the zip did not hold, so the results could not be verified again."""
    result, unzipped = mixed_batch
    row = next(r for r in result.rows if r["image"] == "photo.png")
    assert (unzipped / row["mask"]).is_file() and row["mask"] == "photo_mask.png"
    assert torch.equal(io.read_mask(unzipped / row["mask"], size=(64, 48)).mask,
                       io.read_mask(files["mask"], size=(64, 48)).mask)
    assert {r["mask"] for r in result.rows if r["mask"]} <= {p.name for p in unzipped.iterdir()}
    code = cli.main(["verify", str(files["photo"]), str(unzipped / row["protected_image"]), "--mask",
                     str(unzipped / row["mask"]), "--model", "backfire-s", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code in (cli.EXIT_OK, cli.EXIT_NOT_PROTECTED) and "overall:" in out
    assert (code == cli.EXIT_OK) == row["protected"]  # verify reaches the batch's own verdict


def test_batch_table_says_yes_or_no_and_leaves_a_skipped_photos_cells_empty(mixed_batch):
    """Issue 24 (9): the page showed a raw ``false`` and "/" for a skipped photo's counts."""
    table = {line[0]: line for line in batch.table(mixed_batch[0].rows)}
    assert len(batch.TABLE_HEADERS) == len(table["photo.png"])
    assert table["photo.png"][2] in ("yes", "no") and table["photo.png"][3].count("/") == 1
    assert table["notes.png"] == ["notes.png", "", "", "", "", "", "not an image: notes.png"]


def test_batch_detector_defaults_to_faces_where_opencv_is_installed_else_none(monkeypatch):
    """Issue 24 (9): the Batch tab's detector defaulted to none even for a user with the face detector."""
    assert batch.default_detector() == ("faces" if importlib.util.find_spec("cv2") else None)
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed: `import cv2` fails
    assert batch.default_detector() is None


def test_service_protect_with_the_budget_auto_lists_the_budgets_tried(files, tmp_path, one_thread):
    request = service.Request.of(budget_255=service.BUDGET_AUTO, max_budget_255=4, steps=1, device="cpu")
    photo = service.protect(files["photo"], files["mask"], tmp_path / "out.png", request)
    assert [r["budget_255"] for r in photo.search["rungs"]] == [4] and photo.search["kept"] == 0
    assert json.loads(photo.report.read_text())["search"] == photo.search


def test_batch_refuses_zips_that_unpack_too_large_and_duplicate_names(files, tmp_path, monkeypatch):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", b"\0" * 4096)
    monkeypatch.setattr(batch, "MAX_UNPACKED_BYTES", 1024)
    with pytest.raises(io.InputError, match="unpacks to"):
        batch.unpack([archive], tmp_path / "in1")
    with pytest.raises(io.InputError, match="share this name"):
        batch.unpack([files["photo"], files["photo"]], tmp_path / "in2")
    (tmp_path / "evil.zip").write_bytes(b"PK not a zip")
    with pytest.raises(io.InputError, match="not a readable zip"):
        batch.unpack([tmp_path / "evil.zip"], tmp_path / "in3")


def test_zip_members_are_flattened_so_nothing_lands_outside_the_inbox(files, tmp_path):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(files["photo"], "../../escaped.png")
    found = batch.unpack([archive], tmp_path / "inbox")
    assert found == [tmp_path / "inbox" / "escaped.png"] and not (tmp_path / "escaped.png").exists()


def test_app_command_without_the_extra_says_how_to_install_it(capsys, monkeypatch):
    import backfire.app as app

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else object())
    assert cli.main(["app"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip() == f"backfire: error: backfire app needs the app extra: {app.EXTRA_HINT}"


@pytest.mark.parametrize("port", ["0", "-1", "65536", "x"])
def test_app_port_out_of_range_is_refused_in_one_line(capsys, monkeypatch, port):
    import backfire.app as app

    def refuse(**kwargs):
        raise AssertionError("the app started on a port that does not exist")
    monkeypatch.setattr(app, "serve", refuse)
    assert cli.main(["app", "--port", port]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port" in err and err.startswith("backfire: error: ")


@needs_gradio
def test_a_busy_port_is_refused_in_one_line_naming_a_free_one(capsys):
    import re

    with socket.socket() as busy:  # another program listening on the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["app", "--port", str(port), "--device", "cpu"]) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"port {port} is in use" in err
        free = int(re.search(r"try --port (\d+)", err).group(1))
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", free))  # it is free indeed


# ------------------------------------------------------------------------------ the page's pieces

@needs_gradio
def test_painted_layers_become_the_mask_at_the_photos_size(tmp_path):
    import numpy as np

    from backfire.app import ui

    layer = np.zeros((24, 32, 4), np.uint8)  # the editor shows a 64×48 photo at half size
    layer[2:6, 4:10] = ui.OVERLAY_RGBA
    layer[10, 10] = (255, 0, 255, 20)  # a soft eraser edge: not part of the region
    mask = ui.editor_mask({"layers": [layer, None]}, (64, 48))
    assert mask.shape == (48, 64) and int(mask.sum()) == 4 * 6 * 4
    assert mask[4:12, 8:20].all() and not mask[20, 20]
    sessions = ui.Sessions(tmp_path / "sessions")
    tab = type("Request", (), {"session_hash": "tab-1"})()
    session = sessions.get(tab)
    assert sessions.get(tab) is session
    (session.fresh("photo") / "x.png").write_bytes(b"x")
    sessions.end(tab)  # the tab closed
    assert not session.folder.exists() and session.stopped(session.ticket())  # its folder is gone, its jobs stop


@needs_gradio
def test_region_tools_add_to_the_painted_region_and_explain_failures(files, tmp_path):
    from backfire.app import ui

    page = ui.Page(tmp_path, "cpu")
    tab = type("Request", (), {"session_hash": "tab-2"})()
    assert page.add_box(None, "1,1,2,2", tab)[1] == "⚠ upload a photo first"
    editor, status = page.load_photo(str(files["photo"]), tab)
    assert "64×48 px" in status and editor.value["layers"] == []
    session = page.sessions.get(tab)
    value, status = page.add_box(None, "0,0,10,4", tab)
    value, status = page.add_box(value, "5,0,10,4", tab)  # overlaps the first: the union counts once
    assert status.startswith("Region: 60 px") and int(ui.region_of(session, value).sum()) == 60
    value, status = page.add_mask_file(value, str(files["mask"]), tab)
    logo = example_photo(64, 48)[1]
    assert int(ui.region_of(session, value).sum()) == 60 + int(logo.sum())  # the logo is not in the boxes
    for bad, message in (("0,0,0,4", "w and h must be > 0"), ("64,0,2,2", "outside the 64×48 image"), ("x", "x,y,w,h")):
        editor, status = page.add_box(value, bad, tab)
        assert message in status and isinstance(editor, dict) and editor.get("__type__") == "update"  # left as is
    faces = page.detect_faces(value, tab)[1]
    assert "no face found" in faces or "Detect faces is unavailable" in faces
    assert "notes.png" in page.load_photo(str(files["text"]), tab)[1]
    page.sessions.close_all()
    assert not any((tmp_path / "sessions").iterdir())


SKIPPED = {"__type__": "update"}  # gr.skip(): the component is left as it was


def _tab(name: str):
    return type("Request", (), {"session_hash": name})()


@needs_gradio
def test_messages_name_the_uploaded_file_and_the_pages_own_controls(files, tmp_path):
    """Issue 24.7: no temporary path and no CLI flag the page lacks; a plain line in the status, the editor kept."""
    from backfire.app import ui

    page = ui.Page(tmp_path, "cpu")
    upload = tmp_path / "gradio" / "4f2a9c" / "my big photo.png"  # where Gradio keeps an upload, under the app's root
    upload.parent.mkdir(parents=True)
    shutil.copyfile(files["huge"], upload)
    tab = _tab("tab-messages")
    editor, status = page.load_photo(str(upload), tab)
    assert editor == SKIPPED
    assert status.startswith("⚠ my big photo.png: image is 8000x5001") and "scale it down" in status, status
    page.load_photo(str(files["photo"]), tab)
    said = [page.add_box(None, "x", tab)[1], page.add_box(None, "64,0,2,2", tab)[1],
            page.detect_faces(None, tab)[1], page.detect_text(None, tab)[1]]
    assert said[0].startswith("⚠ Box 'x': expected x,y,w,h") and "Box 64,0,2,2 lies outside" in said[1]
    assert all(str(tmp_path) not in line and "--" not in line for line in [status, *said]), said
    # a message about a flag the page has as a field names the field
    assert service.page_message(ValueError("--weights names one model's weights")).startswith("the Weights field")
    page.sessions.close_all()


@needs_gradio
def test_the_number_fields_carry_the_clis_limits_and_refuse_in_its_words(files, tmp_path):
    """Issue 24.7: the fields' bounds are jobs.check_budget_255 / check_steps's, and a value outside them (or
    2.5 steps, which the CLI refuses) is answered by those rules in the status, not by Gradio."""
    from backfire import jobs
    from backfire.app import ui

    fields = {c["props"].get("elem_id"): c["props"] for c in ui.build(ui.Page(tmp_path, "cpu")).config["components"]}
    low, high = fields["budget"]["minimum"], fields["budget"]["maximum"]
    assert jobs.check_budget_255(low) == low and jobs.check_budget_255(high) == high
    for outside in (low - 0.01, high + 0.01):
        with pytest.raises(ValueError):
            jobs.check_budget_255(outside)
    assert jobs.check_steps(fields["steps"]["minimum"]) == fields["steps"]["minimum"]
    with pytest.raises(ValueError):
        jobs.check_steps(fields["steps"]["minimum"] - 1)
    assert fields["steps"].get("maximum") is None  # the CLI sets no upper limit
    page, tab = ui.Page(tmp_path, "cpu"), _tab("tab-limits")
    page.load_photo(str(files["photo"]), tab)
    value, _ = page.add_mask_file(None, str(files["mask"]), tab)
    for budget, steps, words in ((6.375, -1, "steps must be a whole number ≥ 1"), (6.375, 2.5, "whole number"),
                                 (0.1, 2, "budget 0.1 must be in [0.5, 255]")):
        shown = page.protect(None, value, "backfire-s", "", "paper", budget, steps, tab)
        assert shown[:-1] == (SKIPPED,) * (len(shown) - 1) and shown[-1].startswith("⚠ ") and words in shown[-1]
    page.sessions.close_all()


@needs_gradio
def test_the_preview_sheet_is_captioned_as_it_is_drawn_and_named_after_the_photo(files, tmp_path, one_thread):
    """Issue 24.8: the caption under the sheet is the sheet's own (the perturbation's real scale, not "×10");
    the download is NAME_protected.png; no label badge lies over the sheet."""
    from backfire.app import ui
    from backfire.judge.preview import captions

    page, tab = ui.Page(tmp_path, "cpu"), _tab("tab-sheet")
    page.load_photo(str(files["photo"]), tab)
    value, _ = page.add_mask_file(None, str(files["mask"]), tab)
    shown = dict(zip(ui.PAGE_OUTPUTS, page.protect(None, value, "backfire-s", "", "paper", 6.375, 2, tab)))
    protected = Path(shown["protected"])
    assert [Path(f).name for f in shown["files"]] == ["photo_protected.png", "photo_protected.json",
                                                       "photo_protected.preview.png"]
    peak = float((io.read_image(protected).pixels - io.read_image(files["photo"]).pixels).abs().max()) * 255
    assert shown["caption"] == " | ".join(captions(peak, "exact", "ring"))
    assert shown["caption"].startswith(f"original | protected | perturbation (±{peak:.1f}/255 = black…white) |")
    props = {c["props"].get("elem_id"): c["props"] for c in ui.build(page).config["components"]}
    assert props["preview"]["show_label"] is False
    page.sessions.close_all()


def _labels_in_layout_order(demo, tab: str) -> list[str]:
    """The labels of one tab's components, in the order the page lays them out."""
    props = {c["id"]: c["props"] for c in demo.config["components"]}
    found: list[str] = []

    def walk(node: dict, inside: bool) -> None:
        label = props.get(node["id"], {}).get("label")
        inside = inside or label == tab
        if inside and label and label != tab:
            found.append(label)
        for child in node.get("children", []):
            walk(child, inside)

    walk(demo.config["layout"], False)
    return found


@needs_gradio
def test_verify_shows_the_original_first_as_protect_does(tmp_path):
    """Issue 24.8: one order in both tabs: the original, then the protected photo."""
    from backfire.app import ui

    demo = ui.build(ui.Page(tmp_path, "cpu"))
    labels = _labels_in_layout_order(demo, "Verify")
    position = {label: i for i, label in enumerate(labels)}
    assert position["The original (optional)"] < position["Protected photo"], labels
    assert position["attacker's edit of the original"] < position["attacker's edit of the protected photo"], labels


@needs_gradio
def test_every_region_source_is_drawn_on_the_photo_and_they_combine(files, tmp_path):
    import numpy as np

    from backfire.app import ui

    page = ui.Page(tmp_path, "cpu")
    tab = type("Request", (), {"session_hash": "tab-3"})()
    page.load_photo(str(files["photo"]), tab)
    session = page.sessions.get(tab)
    photo = np.asarray(Image.open(files["photo"])).astype(int)
    stroke = np.zeros((48, 64, 4), np.uint8)  # a brush stroke the user painted, then a box and a mask file
    stroke[30:34, 2:12] = (255, 0, 255, 153)
    value, _ = page.add_box({"background": None, "layers": [stroke]}, "40,2,20,10", tab)
    value, _ = page.add_mask_file(value, str(files["mask"]), tab)
    region = ui.region_of(session, value).numpy() > 0
    assert region[30:34, 2:12].all() and region[2:12, 40:60].all() and region[example_photo(64, 48)[1] > 0].all()
    assert value["layers"] == []  # the strokes are in the drawn region now, not lost
    drawn = np.asarray(Image.open(value["background"])).astype(int)
    alpha = ui.OVERLAY_RGBA[3] / 255
    expected = photo * (1 - alpha) + np.array(ui.OVERLAY_RGBA[:3]) * alpha
    assert np.abs(drawn[region] - expected[region]).max() <= 1  # inside: the photo under translucent magenta
    assert (drawn[~region] == photo[~region]).all()  # outside: the photo itself
    assert int(ui.region_of(session, None).sum()) == int(region.sum())  # Protect takes the same region
    value, _ = page.clear_region(tab)
    assert not ui.region_of(session, value).any() and (np.asarray(Image.open(value["background"])) == photo).all()


@needs_gradio
def test_cancel_stops_the_runs_clicked_before_it_and_never_a_later_one(files, tmp_path, one_thread):
    from backfire.app import ui

    page = ui.Page(tmp_path, "cpu")
    tab = type("Request", (), {"session_hash": "tab-4"})()
    settings = ("backfire-s", "", "paper", 6.375, 2)
    assert page.cancel(tab) == ui.NOTHING_TO_CANCEL  # nothing is running: and no flag is left behind
    early = page.take_ticket(tab)  # a click whose job still waits in the queue when Cancel is pressed
    page.cancel(tab)
    cancelled = page._protect(page.sessions.get(tab), files["photo"], files["mask"], ui._settings(*settings, "cpu"),
                              lambda *a, **k: None, early)
    assert cancelled["status"] == ui.CANCELLED and cancelled["protected"] is None
    later = page.take_ticket(tab)  # the next click runs to the end
    done = page._protect(page.sessions.get(tab), files["photo"], files["mask"], ui._settings(*settings, "cpu"),
                         lambda *a, **k: None, later)
    assert done["status"].startswith("Done:") and Image.open(done["protected"]).size == (64, 48)
    assert page.cancel(tab) == ui.NOTHING_TO_CANCEL  # both jobs ended
    session = page.sessions.get(tab)
    with ui.StepClock(session, page.take_ticket(tab), lambda *a, **k: None) as clock:
        assert page.cancel(tab) == ui.STOPPING  # a running job: it stops at its next step
        with pytest.raises(service.Cancelled):
            clock(1, 2)
    page.sessions.close_all()


@needs_gradio
def test_served_beyond_this_machine_the_page_takes_no_server_paths():
    from backfire.app import ui

    assert ui._settings("lama", "/srv/big-lama.pt", "paper", 6.375, 2, "cpu").weights == Path("/srv/big-lama.pt")
    for model, weights in (("lama", "/etc/passwd"), ("backfire-s,lama=/etc/passwd", "")):
        with pytest.raises(io.InputError, match="only when the app serves this machine alone"):
            ui._settings(model, weights, "paper", 6.375, 2, "cpu", local_paths=False)


# ------------------------------------------------------------------------------ the served app

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page():
    """A fresh tab of Debian's chromium driven by Playwright; the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1000})
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``backfire app`` on a free port, in its own temporary folder; stopped with Ctrl-C (SIGINT) at the end."""
    if not HAS_GRADIO:
        pytest.skip('the app extra is not installed: pip install -e ".[app]"')
    tmp = tmp_path_factory.mktemp("app-tmp")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    log = open(tmp.parent / "app-server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "backfire.cli", "app", "--port", str(port), "--device", "cpu"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("backfire app did not start: " + (tmp.parent / "app-server.log").read_text()[-2000:])
            time.sleep(0.5)
    yield {"url": url, "process": process, "tmp": tmp, "log": tmp.parent / "app-server.log"}
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


@needs_gradio
def test_start_up_says_where_to_open_the_page_and_gives_no_share_advice(server):
    log = server["log"].read_text()
    assert f"backfire app: open {server['url']} in a browser" in log
    assert "share=True" not in log and "Running on" not in log  # Gradio's banner: a public tunnel is not ours


@needs_gradio
def test_api_protect_returns_the_files_and_the_verdict(server, files):
    from gradio_client import handle_file

    result = _client(server).predict(handle_file(files["photo"]), handle_file(files["mask"]), "backfire-s", "",
                                     "paper", 6.375, 2, api_name="/protect")
    protected, downloads, warning, preview, verdict, numbers, status = result
    assert Image.open(protected).size == (64, 48)
    names = sorted(Path(d).name for d in downloads)
    assert names == ["photo_protected.json", "photo_protected.png", "photo_protected.preview.png"]
    assert Image.open(preview).width > 64 * 5
    assert "PROTECTED against backfire-s" in verdict and "attacker edits" in verdict
    assert "verdict:" in numbers and "exact" in numbers
    assert "JPEG" in warning  # recipe paper: the recompression warning is shown
    report = Path(next(d for d in downloads if d.endswith(".json")))
    assert '"protected"' in report.read_text()


@needs_gradio
def test_bad_uploads_get_a_message_and_the_app_keeps_serving(server, files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = _client(server)
    for bad, expected in ((files["text"], "notes.png"), (files["huge"], "huge.png: image is 8000x5001")):
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(bad), handle_file(files["mask"]), "backfire-s", "", "paper", 6.375, 1,
                           api_name="/protect")
        message = str(caught.value)
        assert expected in message and "Traceback" not in message and "\n" not in message.strip()
        assert str(server["tmp"]) not in message and "--max-pixels" not in message, message  # issue 24.7
    with pytest.raises(AppError, match="unknown inpainting model"):
        client.predict(handle_file(files["photo"]), handle_file(files["mask"]), "nope", "", "paper", 6.375, 1,
                       api_name="/protect")
    assert server["process"].poll() is None
    with urllib.request.urlopen(server["url"] + "config", timeout=10) as reply:  # the upload cap, in bytes
        assert json.load(reply)["max_file_size"] == 200 * 1024 * 1024
    protected = client.predict(handle_file(files["photo"]), handle_file(files["mask"]), "backfire-s", "", "paper",
                               6.375, 1, api_name="/protect")[0]
    assert Image.open(protected).size == (64, 48)


@needs_gradio
def test_api_refuses_settings_outside_the_clis_limits_in_its_words(server, files):
    """Issue 24.7: budget and steps outside the CLI's limits (and 2.5 steps) are refused by its rules, in its
    words, with no traceback on the server (not by Gradio's bounds check, nor rounded)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, log = _client(server), server["log"]
    logged = log.stat().st_size
    for budget, steps, words in ((6.375, -1, "steps must be a whole number ≥ 1"), (6.375, 2.5, "whole number"),
                                 (0.1, 1, "budget 0.1 must be in [0.5, 255]")):
        with pytest.raises(AppError, match=re.escape(words)):
            client.predict(handle_file(files["photo"]), handle_file(files["mask"]), "backfire-s", "", "paper",
                           budget, steps, api_name="/protect")
    with open(log, "rb") as written:
        written.seek(logged)
        assert b"Traceback" not in written.read()


@needs_gradio
def test_api_batch_returns_a_zip_and_a_row_per_photo(server, files):
    from gradio_client import handle_file

    archive, table, status = _client(server).predict(
        [handle_file(files["photo"]), handle_file(files["mask"]), handle_file(files["text"])],
        "none (every photo has NAME_mask.png)", "backfire-s", "", "paper", 6.375, 1, api_name="/batch")
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["photo.json", "photo.png", "photo_mask.png", batch.CSV_NAME]
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {"photo.png", "notes.png"} and rows["photo.png"][2] in ("yes", "no")
    assert rows["notes.png"][-1] == "not an image: notes.png" and not any(rows["notes.png"][1:-1])
    assert "1 photo(s) protected, 1 failed" in status


@needs_gradio
def test_page_starts_the_batch_detector_on_faces_where_opencv_is(server):
    """Issue 24 (9): the Batch tab's detector started on none, even with OpenCV's face detector installed."""
    from backfire.app import ui

    with urllib.request.urlopen(server["url"] + "config", timeout=10) as reply:
        components = json.load(reply)["components"]
    (radio,) = [c["props"] for c in components if c.get("props", {}).get("label") == "Photos without a mask"]
    assert ui.DETECTORS[radio["value"]] == ("faces" if importlib.util.find_spec("cv2") else None)


@needs_gradio
def test_api_verify_runs_the_attackers_edit(server, files):
    from gradio_client import handle_file

    edit_protected, edit_original, words, numbers = _client(server).predict(
        handle_file(files["photo"]), handle_file(files["mask"]), handle_file(files["photo"]), "backfire-s", "",
        api_name="/verify")
    assert Image.open(edit_protected).size == Image.open(edit_original).size == (64, 48)
    assert "NOT PROTECTED" in words  # the original judged against itself: nothing protects it
    assert "attacker edit" in numbers


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed: pip install playwright")
@needs_gradio
def test_browser_upload_paint_protect_shows_result_attack_and_verdict(server, files, tmp_path, page):
    before = _session_folders(server)
    page.goto(server["url"])
    page.locator("#photo input[type=file]").set_input_files(str(files["photo"]))
    page.wait_for_selector("#status :text('64×48 px')", timeout=90_000)
    (mine,) = _session_folders(server) - before
    page.wait_for_function("!document.querySelector('#editor').innerText.includes('processing')")
    canvas = page.locator("#editor canvas").first
    page.locator("#editor").get_by_role("button", name="Brush").first.click()
    box = canvas.bounding_box()
    x, y = box["x"] + 0.45 * box["width"], box["y"] + 0.62 * box["height"]
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(12):
        page.mouse.move(x + 8 * k, y + k)
    page.mouse.up()
    # the logo's mask file on top: the region is the union, so it counts more than the logo's pixels
    page.locator("#mask-file input[type=file]").set_input_files(str(files["mask"]))
    page.wait_for_selector("#status :text('Region:')", timeout=90_000)
    region_px = int(page.locator("#status").inner_text().split("Region:")[1].split("px")[0])
    assert region_px > int(example_photo(64, 48)[1].sum())
    page.locator("#steps input").fill("10000")  # a long run, cancelled once its progress shows
    page.click("#run")
    page.wait_for_selector(":text('s left')", timeout=120_000)  # "step i/N · about T s left"
    page.click("#cancel")
    page.wait_for_selector("#status :text('Cancelled')", timeout=90_000)
    assert page.get_by_text("Error", exact=True).count() == 0  # a plain status, no red badge (issue 24.7)
    page.locator("#steps input").fill("2")
    page.click("#run")
    try:
        page.wait_for_selector("#verdict :text('PROTECTED against backfire-s')", timeout=120_000)
    except Exception:
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        raise AssertionError(f"no verdict; status: {page.locator('#status').inner_text()!r}; "
                             f"screenshot: {tmp_path / 'failed.png'}") from None
    for panel in ("#protected img", "#preview img"):  # the result and the attacker's-edit sheet
        page.wait_for_function(f"document.querySelector('{panel}')?.naturalWidth > 0", timeout=90_000)
    caption = page.locator("#preview-caption").inner_text()
    assert caption.startswith("original | protected | perturbation (±") and "black…white" in caption, caption
    assert "JPEG" in page.locator("#jpeg-warning").inner_text()
    listed = " ".join(page.locator("#files").inner_text().split())
    assert "photo_protected .png" in listed and "json" in listed and "preview" in listed, listed  # name, then type
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert any(mine.rglob("photo.png"))
    page.close()  # the tab closes: its session's folder goes
    deadline = time.monotonic() + 30
    while mine.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not mine.exists()
    assert Image.open(shot).width == 1280
    if os.environ.get("BACKFIRE_APP_SCREENSHOT"):
        _small_copy(shot, Path(os.environ["BACKFIRE_APP_SCREENSHOT"]))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed: pip install playwright")
@needs_gradio
@pytest.mark.xfail(strict=False, reason="flaky: the editor's file input is often not processed within 90 s (most "
                   "whole-suite runs, sometimes alone; no server error): open, see the issue note")
def test_browser_photo_dropped_into_the_editor_is_used_with_its_exact_pixels(server, files, page):
    before = _session_folders(server)
    page.goto(server["url"])
    # the editor's upload can race the page's start-up on a busy machine: offer the file again then
    for attempt in range(3):
        page.locator("#editor input[type=file]").first.set_input_files(str(files["photo"]))
        try:
            page.wait_for_selector("#status :text('pasted.png: 64×48 px')", timeout=30_000)
            break
        except Exception:
            if attempt == 2:
                raise
    (mine,) = _session_folders(server) - before
    kept = io.read_image(mine / "photo" / "pasted.png").pixels
    assert torch.equal(kept, io.read_image(files["photo"]).pixels)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed: pip install playwright")
@needs_gradio
def test_browser_batch_tab_shows_its_table_in_words(server, files, page):
    """Issue 24 (9), as a user sees it: the detector starts on faces (OpenCV is here), and the table says yes/no
    and "not an image", never a raw ``false`` or a "/" for a skipped photo."""
    from backfire.app import ui

    page.goto(server["url"])
    page.get_by_role("tab", name="Batch").click()
    default = next(label for label, kind in ui.DETECTORS.items() if kind == batch.default_detector())
    page.wait_for_selector("#batch-detector input[type=radio]")
    assert page.locator("#batch-detector").get_by_label(default, exact=True).is_checked()
    page.locator("#batch-uploads input[type=file]").set_input_files([str(files[k]) for k in ("photo", "mask", "text")])
    page.wait_for_selector("#batch-uploads td.filename[aria-label='notes.png']", timeout=90_000)  # listed: uploaded
    page.click("#batch-run")
    page.wait_for_selector("#batch-status :text('1 photo(s) protected, 1 failed')", timeout=180_000)
    shown = "#batch-table [role=row][data-index]"  # the grid's visible rows (its <table> only measures widths)
    page.wait_for_function(f"document.querySelectorAll('{shown}').length == 2", timeout=90_000)
    rows = page.locator(shown)
    cells = {}
    for i in range(rows.count()):
        texts = [t.strip() for t in rows.nth(i).locator("[role=gridcell]").all_inner_texts()]
        cells[texts[0]] = texts
    assert cells["photo.png"][2] in ("yes", "no"), cells
    assert cells["notes.png"][-1] == "not an image: notes.png" and cells["notes.png"][1:-1] == [""] * 5, cells


def _open_photo(page, server, photo: Path, size: str) -> None:
    """Load the page and upload ``photo``; returns once the editor shows it (``size``: e.g. "64×48")."""
    page.goto(server["url"])
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.wait_for_selector(f"#status :text('{size} px')", timeout=90_000)
    page.wait_for_function("!document.querySelector('#editor').innerText.includes('processing')")


def _magenta(page):
    """The editor's canvas as the user sees it (a screenshot, mouse moved off it): a boolean map of the pixels
    that show the region's translucent magenta (red and blue at least 0.6 of full, green at most 0.4 of the
    photo's), and the number of pixels showing the photo (sky, hills: green or blue well above red)."""
    import numpy as np

    page.mouse.move(0, 0)  # the brush's round cursor is magenta too
    shot = np.asarray(Image.open(_io.BytesIO(page.locator("#editor canvas").first.screenshot())).convert("RGB"))
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    return (r >= 150) & (b >= 150) & (g <= 105), int(((g > r + 30) | (b > r + 60)).sum())


def _until(page, check, timeout_s: float = 60):
    """Poll ``check()`` (the page's state) until it is truthy or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return value


def _bbox(mask):
    import numpy as np

    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed: pip install playwright")
@needs_gradio
def test_browser_every_region_source_is_drawn_on_the_photo_at_once(server, files, page):
    _open_photo(page, server, files["photo"], "64×48")
    toolbar, photo_px = _magenta(page)  # the editor's own magenta: the brush colour's button over the canvas
    page.get_by_label("Box x,y,w,h (pixels)").fill("0,0,32,24")  # the photo's top-left quarter
    page.get_by_role("button", name="Add box").click()
    page.wait_for_selector("#status :text('Region: 768 px')", timeout=90_000)
    first = _until(page, lambda: _bbox(_magenta(page)[0] & ~toolbar))
    assert first, "Add box drew nothing on the photo"
    x0, y0, x1, y1 = first
    scale = (x1 - x0) / 32  # screen pixels per photo pixel
    assert abs((y1 - y0) / scale - 24) <= 1.5, first  # the box's shape, drawn where the box is
    # a brush stroke, then another box: both drawn with the first, and the photo stays on screen
    page.locator("#editor").get_by_role("button", name="Brush").first.click()
    sx, sy = x0 + 8 * scale, y0 + 40 * scale  # photo pixel (8, 40), bottom left
    box = page.locator("#editor canvas").first.bounding_box()
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.mouse.down()
    for k in range(8):
        page.mouse.move(box["x"] + sx + k * scale, box["y"] + sy)
    page.mouse.up()
    page.get_by_label("Box x,y,w,h (pixels)").fill("44,30,16,12")  # bottom right
    page.get_by_role("button", name="Add box").click()
    page.wait_for_function("document.querySelector('#status').innerText.match(/Region: (?!768 )/)",
                           timeout=90_000)  # 768 + 192 + the stroke's

    region_px = int(page.locator("#status").inner_text().split("Region:")[1].split("px")[0])

    def seen() -> tuple[float, int]:  # the magenta on screen in photo pixels, and the photo's pixels shown
        magenta, photo = _magenta(page)
        return int((magenta & ~toolbar).sum()) / scale**2, photo

    def right() -> bool:  # what is drawn is what is protected (both boxes and the stroke), over the photo
        drawn, photo = seen()
        return abs(drawn - region_px) < 0.1 * region_px and photo > 0.5 * photo_px

    assert _until(page, right), f"drawn px, photo px: {seen()}; region {region_px} px, photo {photo_px} px before"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed: pip install playwright")
@needs_gradio
def test_browser_a_run_clicked_right_after_cancel_completes(server, page, tmp_path):
    """Protect clicked again while the cancelled run is still busy (judging, which has no steps to stop at; a
    256×192 photo, so that takes a few seconds): the click waits for that run and completes, never dropped
    (Gradio drops a click while its event is pending) nor stopped by the earlier Cancel."""
    image, mask = example_photo(256, 192)
    io.save_image(image, tmp_path / "wide.png")
    io.save_mask(mask, tmp_path / "wide_mask.png")
    _open_photo(page, server, tmp_path / "wide.png", "256×192")
    page.locator("#mask-file input[type=file]").set_input_files(str(tmp_path / "wide_mask.png"))
    page.wait_for_selector("#status :text('Region:')", timeout=90_000)
    page.locator("#steps input").fill("2")
    page.click("#run")
    page.wait_for_selector(":text('judging the saved file')", timeout=120_000)
    page.click("#cancel")
    page.wait_for_selector("#status :text('Cancel')", timeout=30_000)  # the Cancel's own reply has come
    page.locator("#budget input").fill("2")  # this run's verdict tells it from the first one's
    page.click("#run")
    page.wait_for_selector("#verdict :text('at most 2.0/255')", timeout=180_000)
    assert "Done:" in page.locator("#status").inner_text()


def _session_folders(server) -> set[Path]:
    return set(server["tmp"].glob("backfire-app-*/sessions/session-*"))


def _small_copy(shot: Path, out: Path) -> None:
    """The screenshot for the README: scaled to 3/4 and palette-quantised to stay under 200 KB."""
    picture = Image.open(shot).convert("RGB")
    picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4), Image.Resampling.LANCZOS)
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    assert out.stat().st_size < SCREENSHOT_BYTES


@needs_gradio
def test_stopping_the_app_removes_its_temporary_folder(server):
    """Runs last in this module (pytest keeps file order): the uploads of every test above must be gone."""
    assert any(server["tmp"].glob("backfire-app-*"))
    server["process"].send_signal(signal.SIGTERM)  # as `kill` or a service manager stops it (Ctrl-C: SIGINT)
    server["process"].wait(timeout=30)
    assert not list(server["tmp"].glob("backfire-app-*"))
