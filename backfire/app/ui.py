"""The page: Protect, Verify and Batch tabs, built with Gradio over :mod:`backfire.app.service`.

Everything a user uploads or the app writes lives in a per-browser-session folder under the app's
temporary root, removed when the tab closes (the page's unload event; its running job stops at the
next step) and, with the root, when the app stops. The heavy jobs (protect, verify, batch) share one
queue slot, so several users wait their turn instead of splitting a CPU.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from backfire.app import batch, service

BRUSH_COLOUR = ("#ff00ff", 0.6)  # magenta at 60 %: the region shows, and so does the photo under it
OVERLAY_RGBA = (255, 0, 255, 153)  # the same colour, for regions the app draws (detectors, boxes, mask files)
ALPHA_MIN = 64  # a layer's pixel belongs to the region above this opacity (soft edges of the eraser drop out)
EDITOR_MAX_SIDE = 2048  # larger photos are shown scaled down; the region is scaled back to full size
WORK = "backfire-work"  # concurrency id shared by protect, verify and batch
GRADIO_CACHE_S = (1800, 3600)  # Gradio's copies of uploads and results: swept every 30 min, kept 1 h
SESSION_TTL_S = 6 * 3600  # a session an API client never closes is removed after this
DETECTORS = {"none (every photo has NAME_mask.png)": None, "faces": "faces", "text": "text"}

INTRO = """# backfire
Protect a region of a photo — a face, a signature, a logo — against AI inpainting: after protection,
masking the region and inpainting gives a glaring solid colour, while edits elsewhere still work.
**1** upload a photo · **2** paint the region (or detect faces / text, draw a box, upload a mask) ·
**3** Protect · **4** download the PNG and read the verdict: it is measured, not promised."""

CANCELLED = "Cancelled: nothing was written."
# what a protection shows: the API's outputs in their order, and the page's (the sheet's caption too; status last)
API_OUTPUTS = ("protected", "files", "warning", "sheet", "verdict", "numbers", "status")
PAGE_OUTPUTS = ("protected", "files", "warning", "sheet", "verdict", "numbers", "caption", "status")
STOPPING = "Cancelling: the run stops at its next step…"
NOTHING_TO_CANCEL = "Nothing is running; a run still waiting its turn will not start."
JPEG_WARNING = ("⚠ Share this PNG as it is: saving or recompressing it as JPEG weakens the protection "
                "(recipe `robust` is made to resist recompression).")


class Session:
    """One browser session's folder, its region and its cancel switch.

    Cancel works on tickets, not on Gradio's own cancel (which stops whatever run of the same event this
    session has when its request lands, so a Cancel arriving late stopped the *next* run): every job click
    takes a ticket at once (no queue), and Cancel stops the jobs holding the tickets handed out so far, each
    at its next step. A job that takes its ticket after the Cancel is untouched, so nothing stale carries
    over; a job still waiting in the queue stops as soon as it starts."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.issued = 0  # tickets handed to job clicks, in click order
        self.cancelled = 0  # the jobs holding a ticket up to this one stop at their next step
        self.running: set[int] = set()  # the tickets of the jobs running now
        self.closed = False
        self.lock = threading.Lock()
        self.photo: Path | None = None
        self.size: tuple[int, int] | None = None  # (W, H) of the photo
        self.view: Path | None = None  # the photo as shown in the editor, without the region
        self.region: torch.Tensor | None = None  # H×W: what detect, box, mask file and earlier strokes added
        self.shown: Path | None = None  # the editor's background as last drawn: the view with the region on it
        self.used = time.monotonic()

    def ticket(self) -> int:
        with self.lock:
            self.issued += 1
            return self.issued

    def stopped(self, ticket: int) -> bool:
        return self.closed or ticket <= self.cancelled

    def fresh(self, name: str) -> Path:
        """An empty sub-folder ``name`` (its earlier contents are removed)."""
        folder = self.folder / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def cancel(self) -> bool:
        """Stop every job clicked so far; whether one is running now."""
        with self.lock:
            self.cancelled = self.issued
            return bool(self.running)

    def close(self) -> None:
        self.closed = True
        shutil.rmtree(self.folder, ignore_errors=True)


OUT_OF_MEMORY = "out of memory: try a smaller photo"


def _problem(page: Page, error: BaseException) -> str | None:
    """The page's one line for an error a user can fix (None: a bug, left to crash loudly)."""
    if isinstance(error, service.PROBLEMS):
        return service.page_message(error, page.private)
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return OUT_OF_MEMORY
    return None


def _answering(said):
    """A page event whose errors a user can fix are answered by ``said(message)`` (in plain words, from
    :func:`_problem`); any other error is the app's own and propagates. The app keeps serving."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(page: Page, *args, **kwargs):
            try:
                return fn(page, *args, **kwargs)
            except Exception as error:
                message = _problem(page, error)
                if message is None:
                    raise
                return said(message)
        return wrapper
    return decorate


def _raise_for_the_page(message: str):
    raise gr.Error(message, print_exception=False) from None


# a message in the page (``gr.Error``: the API's callers get it as their error)
_friendly = _answering(_raise_for_the_page)


def _told(outputs: int):
    """For the page's own events whose last output is the status line: an error a user can fix is said there,
    in plain words, and the other ``outputs`` are left as they were (``gr.Error`` would mark every one of them
    with a bare red "Error" and blank the editor)."""
    return _answering(lambda message: (*[gr.skip()] * (outputs - 1), f"⚠ {message}"))


class StepClock:
    """The service's step callback: page progress (step i/N, time left) and the cancel check. Used as a
    context around the job: the session knows what is running."""

    def __init__(self, session: Session, ticket: int | None, progress: gr.Progress, label: str = "") -> None:
        self.session, self.progress, self.label = session, progress, label
        self.ticket = session.ticket() if ticket is None else ticket  # an API call takes its ticket as it starts
        self.first: float | None = None

    def check(self) -> None:
        if self.session.stopped(self.ticket):
            raise service.Cancelled()

    def __enter__(self) -> StepClock:
        self.check()  # cancelled while it waited in the queue: it stops before loading anything
        self.session.running.add(self.ticket)
        return self

    def __exit__(self, *_) -> None:
        self.session.running.discard(self.ticket)

    def __call__(self, step: int, total: int, loss: float | None = None) -> None:
        self.check()
        self.session.used = time.monotonic()  # a long job keeps its session from being swept
        now = time.perf_counter()
        if self.first is None or step <= 1:
            self.first, left = now, None
        else:
            left = (now - self.first) / (step - 1) * (total - step)
        if step >= total:
            desc = f"{self.label}judging the saved file…"
        else:
            desc = f"{self.label}step {step}/{total}" + ("" if left is None else f" · about {left:.0f} s left")
        self.progress((step, total), desc=desc)


# ------------------------------------------------------------------------------------ the region

def _view_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, EDITOR_MAX_SIDE / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def region_of(session: Session, value: dict | None) -> torch.Tensor:
    """The region that will be protected, H×W at the photo's size: what the region tools added (and the strokes
    drawn before them) and the editor's brush strokes since."""
    strokes = editor_mask(value, session.size)
    return strokes if session.region is None else torch.maximum(session.region, strokes)


def show_region(session: Session, region: torch.Tensor | None = None) -> dict:
    """Make ``region`` the session's region and draw it: the editor's new background is the photo with the
    region in translucent magenta, and its layers start empty (the strokes so far are in the region). Drawn
    into the background rather than sent as a layer, which the editor does not always show."""
    session.region = None if region is None or not region.any() else region
    view = service.read_photo(session.view)[0]
    if session.region is not None:
        shade = OVERLAY_RGBA[3] / 255 * torch.nn.functional.interpolate(
            session.region[None, None], size=view.shape[-2:], mode="nearest")[0]
        view = view * (1 - shade) + torch.tensor(OVERLAY_RGBA[:3]).view(3, 1, 1) / 255 * shade
    session.shown = session.fresh("shown") / "photo.png"
    service.save_photo(view, session.shown)
    return {"background": str(session.shown), "layers": [], "composite": None}


def _brush(view_size: tuple[int, int]) -> gr.Brush:
    """A brush about 1/25 of the photo's short side, in the editor's (view) pixels."""
    return gr.Brush(colors=[BRUSH_COLOUR], color_mode="fixed", default_size=max(2, round(min(view_size) / 25)))


def editor_mask(value: dict | None, size: tuple[int, int]) -> torch.Tensor:
    """The union of the editor's layers (brush strokes and drawn regions) as an H×W mask at the photo's size."""
    union = None
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        pixels = np.asarray(layer)
        opaque = pixels[..., 3] > ALPHA_MIN if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels.any(axis=-1)
        union = opaque if union is None or union.shape != opaque.shape else union | opaque
    w, h = size
    if union is None:
        return torch.zeros(h, w)
    picture = Image.fromarray(union.astype(np.uint8) * 255)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.NEAREST)
    return torch.from_numpy((np.asarray(picture) > 127).astype(np.float32))


def _need_photo(session: Session) -> None:
    if session.photo is None:
        raise service.InputError("upload a photo first")


def _settings(model, weights, recipe, budget, steps, device: str, local_paths: bool = True) -> service.Request:
    if (weights or "=" in (model or "")) and not local_paths:
        raise service.InputError("weights paths are taken only when the app serves this machine alone "
                                "(backfire app --host 127.0.0.1): a path names a file on the server")
    return service.Request.of(model=(model or service.available_choices()[0]).strip(), weights=weights or None,
                              recipe=recipe or service.default_recipe(),
                              budget_255=None if budget in (None, "") else float(budget),
                              steps=None if steps in (None, "") else steps, device=device)


class Sessions:
    """The open browser sessions by Gradio's session hash. A session ends when its tab closes (the page's
    unload event); one never closed (an API client) is removed once unused for ``SESSION_TTL_S``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.open: dict[str, Session] = {}
        self.lock = threading.Lock()

    def get(self, request: gr.Request | None) -> Session:
        key = getattr(request, "session_hash", None) or "anonymous"
        now = time.monotonic()
        with self.lock:
            for other, old in list(self.open.items()):
                if other != key and now - old.used > SESSION_TTL_S:
                    self.open.pop(other).close()
            session = self.open.get(key)
            if session is None:
                session = self.open[key] = Session(self.root)
            session.used = now
            return session

    def end(self, request: gr.Request) -> None:
        with self.lock:
            session = self.open.pop(getattr(request, "session_hash", None) or "anonymous", None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        with self.lock:
            while self.open:
                self.open.popitem()[1].close()


class Page:
    """The page's event handlers; each finds its session from the request."""

    def __init__(self, root: Path, device: str, local_paths: bool = True) -> None:
        self.sessions = Sessions(root / "sessions")
        self.device = device
        self.local_paths = local_paths  # whether the weights field may name files on this machine
        # where the app keeps its copies (sessions, Gradio's uploads): messages name a file by its own name
        self.private = (root, Path(gr.utils.get_upload_folder()))

    # ---- the region

    @_told(2)
    def load_photo(self, upload: str | None, request: gr.Request):
        """A new photo file: read it the CLI's way (caps, EXIF), keep a copy, show it with no region."""
        session = self.sessions.get(request)
        if not upload:
            session.photo = session.size = session.view = None
            return None, ""
        source = Path(upload)
        service.read_photo(source)  # refused here, before anything is kept, if the CLI would refuse it
        photo = session.fresh("photo") / source.name
        shutil.copyfile(source, photo)
        return self._use(session, photo)

    @_told(2)
    def photo_from_editor(self, value: dict | None, request: gr.Request):
        """A photo dropped or pasted straight into the editor: the browser decoded it; it is used as a PNG."""
        background = None if value is None else value.get("background")
        if background is None:
            return gr.skip(), ""
        pixels = np.asarray(background)
        if pixels.ndim == 3 and pixels.shape[2] == 4 and (pixels[..., 3] == 255).all():
            pixels = pixels[..., :3]  # opaque: no alpha to speak of
        session = self.sessions.get(request)
        if session.shown is not None and np.array_equal(pixels, np.asarray(Image.open(session.shown))):
            return gr.skip(), gr.skip()  # the editor reports the photo the page itself just showed
        photo = session.fresh("photo") / "pasted.png"
        Image.fromarray(pixels).save(photo)
        return self._use(session, photo)

    def _use(self, session: Session, photo: Path) -> tuple:
        """Make ``photo`` the session's photo and show it in the editor, scaled down when large."""
        pixels, notes = service.read_photo(photo)
        session.photo = photo
        session.size = (int(pixels.shape[-1]), int(pixels.shape[-2]))
        session.view = session.fresh("view") / "photo.png"
        view_size = _view_size(session.size)
        if view_size != session.size:
            pixels = torch.nn.functional.interpolate(pixels[None], size=view_size[::-1], mode="area")[0]
        service.save_photo(pixels, session.view)
        w, h = session.size
        shown = "" if view_size == session.size else f", shown at {view_size[0]}×{view_size[1]}"
        status = f"**{photo.name}**: {w}×{h} px{shown}. Now paint the region to protect."
        editor = gr.ImageEditor(value=show_region(session), brush=_brush(view_size))
        return editor, status + "".join(f"\n\nnote: {n}" for n in notes)

    def _add(self, request: gr.Request, value: dict | None, find) -> tuple:
        session = self.sessions.get(request)
        _need_photo(session)
        region = torch.maximum(region_of(session, value), find(session))
        share = 100 * float(region.mean())
        return show_region(session, region), f"Region: {int(region.sum())} px ({share:.1f} % of the photo)."

    @_told(2)
    def detect_faces(self, value: dict | None, request: gr.Request):
        return self._add(request, value, lambda s: service.detect("faces", service.read_photo(s.photo)[0]))

    @_told(2)
    def detect_text(self, value: dict | None, request: gr.Request):
        return self._add(request, value, lambda s: service.detect("text", service.read_photo(s.photo)[0]))

    @_told(2)
    def add_box(self, value: dict | None, text: str, request: gr.Request):
        return self._add(request, value, lambda s: service.box(s.size, text or ""))

    @_told(2)
    def add_mask_file(self, value: dict | None, mask_file: str | None, request: gr.Request):
        if not mask_file:
            return gr.skip(), ""
        return self._add(request, value, lambda s: service.read_region(Path(mask_file), s.size))

    @_told(2)
    def clear_region(self, request: gr.Request):
        session = self.sessions.get(request)
        _need_photo(session)
        return show_region(session), "Region cleared."

    # ---- jobs

    @_told(len(PAGE_OUTPUTS))
    def protect(self, ticket: int | None, value: dict | None, model, weights, recipe, budget, steps,
                request: gr.Request, progress=gr.Progress()):
        """Protect the uploaded photo's region (``ticket``: the click's, from :meth:`take_ticket`)."""
        session = self.sessions.get(request)
        _need_photo(session)
        region = region_of(session, value)
        if not region.any():
            raise service.InputError("paint the region to protect first (brush, detect, box or mask file)")
        mask = session.fresh("region") / f"{session.photo.stem}_mask.png"
        service.save_region(region, mask)
        settings = _settings(model, weights, recipe, budget, steps, self.device, self.local_paths)
        shown = self._protect(session, session.photo, mask, settings, progress, ticket)
        return tuple(shown[name] for name in PAGE_OUTPUTS)

    @_friendly
    def protect_files(self, photo: str | None, mask: str | None, model, weights, recipe, budget, steps,
                      request: gr.Request, progress=gr.Progress()):
        """API: protect ``photo`` in the region of the mask file ``mask`` (white = protect)."""
        if not photo or not mask:
            raise service.InputError("give a photo and its mask")
        settings = _settings(model, weights, recipe, budget, steps, self.device, self.local_paths)
        shown = self._protect(self.sessions.get(request), Path(photo), Path(mask), settings, progress)
        return tuple(shown[name] for name in API_OUTPUTS)

    def _protect(self, session: Session, photo: Path, mask: Path, settings: service.Request, progress,
                 ticket: int | None = None) -> dict[str, object]:
        """What a protection shows, by the names of ``PAGE_OUTPUTS``."""
        try:
            with StepClock(session, ticket, progress) as clock:
                progress(0, desc="loading the model…")
                out = session.fresh("result") / service.protected_name(photo)
                done = service.protect(photo, mask, out, settings, on_step=clock)
        except service.Cancelled:
            return dict(protected=None, files=None, warning="", sheet=None, verdict="", numbers="", caption="",
                        status=CANCELLED)
        warning = "" if service.resists_recompression(settings.recipe) else JPEG_WARNING
        notes = "".join(f"\n\n{n}" for n in done.notes)
        return dict(protected=str(done.protected), files=[str(done.protected), str(done.report), str(done.preview)],
                    warning=warning, sheet=str(done.preview), verdict=f"**{service.verdict_words(done.outcome)}**",
                    numbers=service.verdict_numbers(done.outcome), caption=service.sheet_caption(done.outcome),
                    status=f"Done: **{done.protected.name}** and its report.{notes}")

    @_friendly
    def verify(self, protected: str | None, mask: str | None, original: str | None, model, weights,
               request: gr.Request, progress=gr.Progress()):
        """The attacker's edit of a protected photo (and of its original, with the verdict, when given)."""
        if not protected or not mask:
            raise service.InputError("give the protected photo and its mask")
        settings = _settings(model, weights, None, None, None, self.device, self.local_paths)
        folder = self.sessions.get(request).fresh("verify")
        progress(0, desc="running the attacker's edit…")
        edit_protected = service.attack(Path(protected), Path(mask), folder / "edit-of-protected.png", settings)
        if not original:
            return (str(edit_protected), None, "The attacker's edit of the protected photo is shown; give the "
                    "original too for the verdict.", "")
        edit_original = service.attack(Path(original), Path(mask), folder / "edit-of-original.png", settings)
        progress(0.5, desc="judging…")
        verdict = service.verify(Path(original), Path(protected), Path(mask), settings)
        return (str(edit_protected), str(edit_original), f"**{service.verdict_words(verdict)}**",
                service.verdict_numbers(verdict))

    @_friendly
    def batch(self, ticket: int | None, uploads: list[str] | None, detector: str, model, weights, recipe, budget,
              steps, request: gr.Request, progress=gr.Progress()):
        """Protect several photos (or zips of them): a zip of PNGs, verdict JSONs and one CSV."""
        if not uploads:
            raise service.InputError("upload photos (NAME.png with NAME_mask.png, or choose a detector) or a .zip")
        session = self.sessions.get(request)
        settings = _settings(model, weights, recipe, budget, steps, self.device, self.local_paths)
        try:
            with StepClock(session, ticket, progress) as clock:

                def on_photo(i: int, n: int, name: str) -> None:
                    clock.check()
                    clock.label, clock.first = f"{name} ({i}/{n}): ", None
                    progress((i - 1, n), desc=f"{name} ({i}/{n})")

                result = batch.run([Path(u) for u in uploads], session.fresh("batch"), settings,
                                   DETECTORS.get(detector, detector), on_photo=on_photo, on_step=clock)
        except service.Cancelled:
            return None, [], CANCELLED
        done = len({r["image"] for r in result.rows}) - result.failures
        failed = f", {result.failures} failed (see the table)" if result.failures else ""
        return str(result.archive), batch.table(result.rows), f"{done} photo(s) protected{failed}"

    def take_ticket(self, request: gr.Request) -> int:
        """A job click's ticket, taken at once (no queue): a Cancel pressed later stops that job, none before."""
        return self.sessions.get(request).ticket()

    def cancel(self, request: gr.Request) -> str:
        """Stop the session's jobs clicked so far, each at its next step (its thread ends there and the job
        itself then says so, so the next run starts only once this one is over); nothing is written."""
        return STOPPING if self.sessions.get(request).cancel() else NOTHING_TO_CANCEL

    def end(self, request: gr.Request) -> None:
        """The tab closed: stop its job and remove its folder."""
        self.sessions.end(request)


# ------------------------------------------------------------------------------------------ page

def build(page: Page) -> gr.Blocks:
    """The whole page, its events bound to ``page``'s handlers."""
    with gr.Blocks(title="backfire", delete_cache=GRADIO_CACHE_S) as demo:
        gr.Markdown(INTRO)
        settings = _settings_panel()
        with gr.Tabs():
            with gr.Tab("Protect"):
                outputs = _protect_tab(page, settings)
            with gr.Tab("Verify"):
                _verify_tab(page, settings)
            with gr.Tab("Batch"):
                _batch_tab(page, settings)
        # the API's protect: a photo and a mask file instead of the painted region
        api_photo, api_mask, api_trigger = gr.File(visible=False), gr.File(visible=False), gr.Button(visible=False)
        api_trigger.click(page.protect_files, [api_photo, api_mask, *settings], outputs, api_name="protect",
                          concurrency_limit=1, concurrency_id=WORK)
        demo.unload(page.end)
    return demo


def _bounded(field: gr.Number) -> gr.Number:
    """A number field that shows the CLI's limits (``minimum``, ``maximum``: the browser's bounds) and leaves
    refusing a value outside them to the CLI's own rules (``Request.of``): Gradio's check would answer in its
    own words with a server traceback, and its rounding would turn 2.5 steps, which the CLI refuses, into 2.
    (An instance's method, not a subclass: Gradio writes a ``.pyi`` beside the module of every subclass.)"""
    field.preprocess = lambda payload: payload
    return field


def _settings_panel() -> list:
    budget0, steps0 = service.recipe_defaults(service.default_recipe())
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            model = gr.Dropdown(service.available_choices(), value=service.available_choices()[0],
                                allow_custom_value=True, label="Model",
                                info="the attacker's inpainting model; a,b protects against both", elem_id="model")
            weights = gr.Textbox(label="Weights (a file or folder on this machine)",
                                 placeholder="backfire-s needs none", elem_id="weights")
            recipe = gr.Dropdown(service.recipe_names(), value=service.default_recipe(), label="Recipe",
                                 elem_id="recipe")
            low, high = service.BUDGET_255_LIMITS
            budget = _bounded(gr.Number(budget0, label="Budget (L∞, /255)", minimum=low, maximum=high,
                                        info=f"{low:g} to {high:g}; the paper's is 6.4", elem_id="budget"))
            steps = _bounded(gr.Number(steps0, label="Steps", precision=0, minimum=service.MIN_STEPS,
                                       info=f"{service.MIN_STEPS} or more", elem_id="steps"))
    recipe.change(lambda r: service.recipe_defaults(r), recipe, [budget, steps], api_visibility="private")
    return [model, weights, recipe, budget, steps]


def _protect_tab(page: Page, settings: list) -> list:
    image_types = list(service.IMAGE_EXTENSIONS)
    with gr.Row():
        with gr.Column():
            photo = gr.File(label="1 · Photo (any format the CLI reads; or drop / paste it into the editor)",
                            file_types=image_types, type="filepath", elem_id="photo")
            editor = gr.ImageEditor(
                label="2 · Paint the region to protect", type="numpy", image_mode="RGBA", format="png",
                sources=("upload", "clipboard"), transforms=(), layers=False, height=420, elem_id="editor",
                brush=_brush((400, 400)), eraser=gr.Eraser())
            with gr.Row():
                faces = gr.Button("Detect faces", size="sm")
                text = gr.Button("Detect text", size="sm")
                clear = gr.Button("Clear region", size="sm")
            with gr.Row():
                box_text = gr.Textbox(label="Box x,y,w,h (pixels)", placeholder="10,20,100,50", scale=2)
                box_button = gr.Button("Add box", size="sm", scale=1)
            mask_file = gr.File(label="…or a mask file (white = protect)", file_types=image_types,
                                type="filepath", elem_id="mask-file")
        with gr.Column():
            with gr.Row():
                run = gr.Button("3 · Protect", variant="primary", elem_id="run")
                cancel = gr.Button("Cancel", elem_id="cancel")
            status = gr.Markdown(elem_id="status")
            verdict = gr.Markdown(elem_id="verdict")
            protected = gr.Image(label="Protected", type="filepath", format="png", interactive=False,
                                 height=260, elem_id="protected")
            warning = gr.Markdown(elem_id="jpeg-warning")
            files = gr.File(label="4 · Download", file_count="multiple", interactive=False, elem_id="files")
    # the sheet carries its own captions: a label badge would cover them; they are repeated, readable, below it
    sheet = gr.Image(label="the preview sheet", show_label=False, type="filepath", format="png", interactive=False,
                     height=220, elem_id="preview")
    caption = gr.Markdown(elem_id="preview-caption")
    numbers = gr.Textbox(label="The verdict in numbers", lines=10, interactive=False, elem_id="numbers")

    private = {"api_visibility": "private"}
    region = [editor, status]
    photo.change(page.load_photo, photo, region, **private)
    # a photo dropped or pasted into the editor (the event also fires when the page shows a photo: skipped)
    editor.upload(page.photo_from_editor, editor, region, show_progress="hidden", **private)
    faces.click(page.detect_faces, editor, region, **private)
    text.click(page.detect_text, editor, region, **private)
    box_button.click(page.add_box, [editor, box_text], region, **private)
    mask_file.change(page.add_mask_file, [editor, mask_file], region, **private)
    clear.click(page.clear_region, None, region, **private)
    shown = dict(protected=protected, files=files, warning=warning, sheet=sheet, verdict=verdict, numbers=numbers,
                 caption=caption, status=status)
    ticket = gr.State()
    # a click while the last run is still stopping waits for it (Gradio's default drops it)
    run.click(page.take_ticket, None, ticket, queue=False, **private).then(
        page.protect, [ticket, editor, *settings], [shown[name] for name in PAGE_OUTPUTS],
        api_name="protect_painted", concurrency_limit=1, concurrency_id=WORK, trigger_mode="always_last",
        **private)
    cancel.click(page.cancel, None, status, queue=False, **private)  # not Gradio's cancels=: see Session
    return [shown[name] for name in API_OUTPUTS]


def _verify_tab(page: Page, settings: list) -> None:
    image_types = list(service.IMAGE_EXTENSIONS)
    gr.Markdown("Run the attacker's edit on a protected photo. With the original too, the verdict says "
                "whether the protection holds.")
    # shown as the Protect tab's sheet shows them: the original first, then the protected photo (the API's order
    # of inputs and outputs is its own and stays)
    with gr.Row():
        original = gr.File(label="The original (optional)", file_types=image_types, type="filepath")
        protected = gr.File(label="Protected photo", file_types=image_types, type="filepath")
        mask = gr.File(label="Its mask (white = protected region)", file_types=image_types, type="filepath")
    run = gr.Button("Run the attacker's edit", variant="primary")
    with gr.Row():
        edit_original = gr.Image(label="attacker's edit of the original", interactive=False)
        edit_protected = gr.Image(label="attacker's edit of the protected photo", interactive=False)
    words = gr.Markdown()
    numbers = gr.Textbox(label="The verdict in numbers", lines=10, interactive=False)
    model, weights = settings[:2]
    run.click(page.verify, [protected, mask, original, model, weights], [edit_protected, edit_original, words, numbers],
              api_name="verify", concurrency_limit=1, concurrency_id=WORK)


def _batch_tab(page: Page, settings: list) -> None:
    gr.Markdown("Several photos, or a .zip of them. A photo `NAME.png` uses `NAME_mask.png` when it is there; "
                "otherwise the chosen detector finds the region. You get one zip: the protected PNGs, a verdict "
                "JSON and the mask of each (to run `backfire verify` again), and `verdicts.csv`.")
    uploads = gr.File(label="Photos, masks or .zip", file_count="multiple",
                      file_types=[*service.IMAGE_EXTENSIONS, ".zip"], type="filepath", elem_id="batch-uploads")
    default = next(label for label, kind in DETECTORS.items() if kind == batch.default_detector())
    detector = gr.Radio(list(DETECTORS), value=default, label="Photos without a mask", elem_id="batch-detector")
    with gr.Row():
        run = gr.Button("Protect all", variant="primary", elem_id="batch-run")
        cancel = gr.Button("Cancel")
    status = gr.Markdown(elem_id="batch-status")
    archive = gr.File(label="Download", interactive=False)
    table = gr.Dataframe(headers=list(batch.TABLE_HEADERS), interactive=False, elem_id="batch-table")
    ticket = gr.State()
    run.click(page.take_ticket, None, ticket, queue=False, api_visibility="private").then(
        page.batch, [ticket, uploads, detector, *settings], [archive, table, status], api_name="batch",
        concurrency_limit=1, concurrency_id=WORK, trigger_mode="always_last")
    cancel.click(page.cancel, None, status, api_visibility="private", queue=False)


THEME_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # system fonts: the page fetches nothing from the web
CSS = "#protected img, #preview img { object-fit: contain !important; }"  # small photos fill their panel


def serve(root: Path, device: str, host: str, port: int, max_file_size: str, local: bool = True) -> None:
    """Build the page and serve it until interrupted; every session's folder is removed on the way out.
    ``local``: only this machine can reach the page, so the weights field may name files on it."""
    page = Page(root, device, local_paths=local)
    demo = build(page)
    demo.queue(default_concurrency_limit=4)
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["ui-monospace", "monospace"])
    try:
        # quiet: Gradio's banner advises share=True (a public tunnel) — the page says where it is itself
        demo.launch(server_name=host, server_port=port, max_file_size=max_file_size, show_error=True,
                    ssr_mode=False, allowed_paths=[str(root)], theme=theme, css=CSS, footer_links=["api"],
                    quiet=True, prevent_thread_lock=True)
        shown = f"[{host}]" if ":" in host else host
        print(f"backfire app: open http://{shown}:{port}/ in a browser (Ctrl-C stops it)", flush=True)
        demo.block_thread()
    finally:
        page.sessions.close_all()
