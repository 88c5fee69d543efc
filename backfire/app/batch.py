"""The Batch tab's work, without the page: uploaded photos (or zips of them) → protected PNGs, their verdict
JSONs and one CSV, zipped.

Masks come as ``NAME_mask.*`` beside ``NAME.*`` (the CLI's folder rule, :func:`backfire.io.pair_files`) or, for
photos without one, from a detector (faces or text); each goes into the zip beside its protected photo, so
``backfire verify NAME.* NAME.png --mask NAME_mask.*`` can be run again on the results. The CSV is the CLI's
``batch.csv`` row type (:class:`backfire.jobs.BatchRow`); the page's table shows the same rows in words
(:func:`table`). Zips are unpacked with limits (member count, unpacked bytes, flat names only), so
an upload cannot write outside the session's folder or fill the disk.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backfire.app import service

MAX_MEMBERS = 1000
MAX_UNPACKED_BYTES = 4 << 30
MASK_SUFFIX = "_mask"
CSV_NAME = "verdicts.csv"
ZIP_NAME = "backfire-protected.zip"
CSV_FIELDS = service.BATCH_COLUMNS
TABLE_HEADERS = ("image", "model", "protected", "attacker edits failed", "benign edits intact", "PSNR dB", "error")

OnPhoto = Callable[[int, int, str], None]


@dataclass
class BatchResult:
    """The zip and the rows of its CSV, as written (one mapping per photo, the columns of ``CSV_FIELDS``)."""

    archive: Path
    rows: list[dict]

    @property
    def failures(self) -> int:
        return len({r["image"] for r in self.rows if r["error"]})


def unpack(uploads: Sequence[Path], inbox: Path) -> list[Path]:
    """Copy the uploaded images and masks into ``inbox`` (flat), unpacking zips; returns the files."""
    inbox.mkdir(parents=True, exist_ok=True)
    unpacked = 0
    for upload in uploads:
        upload = Path(upload)
        if upload.suffix.lower() == ".zip":
            unpacked += _unzip(upload, inbox, MAX_UNPACKED_BYTES - unpacked)
        elif upload.suffix.lower() in service.IMAGE_EXTENSIONS:
            shutil.copyfile(upload, _fresh(inbox, upload.name))
        else:
            raise service.InputError(f"{upload.name}: not an image ({', '.join(service.IMAGE_EXTENSIONS)}) "
                                       "or a .zip of images")
    files = sorted(p for p in inbox.iterdir() if p.is_file())
    if not files:
        raise service.InputError("no photos: upload images (NAME.png, optional NAME_mask.png) or a .zip of them")
    return files


def _unzip(archive: Path, inbox: Path, allowance: int) -> int:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and _wanted(m.filename)]
            if len(members) > MAX_MEMBERS:
                raise service.InputError(f"{archive.name}: {len(members)} images; at most {MAX_MEMBERS} per batch")
            total = sum(m.file_size for m in members)
            if total > allowance:
                raise service.InputError(f"{archive.name}: unpacks to {total / 2**20:.0f} MiB; at most "
                                           f"{allowance / 2**20:.0f} MiB")
            for member in members:
                target = _fresh(inbox, Path(member.filename).name)
                with zf.open(member) as source, open(target, "wb") as sink:
                    _copy_at_most(source, sink, member.file_size, archive.name)
            return total
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise service.InputError(f"{archive.name}: not a readable zip ({error})") from None


def _wanted(name: str) -> bool:
    """Image files only; no folders' metadata (``__MACOSX/``), no hidden files."""
    path = Path(name)
    return (path.suffix.lower() in service.IMAGE_EXTENSIONS and not path.name.startswith(".")
            and "__MACOSX" not in path.parts)


def _copy_at_most(source, sink, limit: int, shown: str) -> None:
    written = 0
    while chunk := source.read(1 << 20):
        written += len(chunk)
        if written > limit:
            raise service.InputError(f"{shown}: a member is larger than the zip says")
        sink.write(chunk)


def _fresh(folder: Path, name: str) -> Path:
    target = folder / name
    if target.exists() or not name or name.startswith("."):
        raise service.InputError(f"{name or '(no name)'}: two uploads share this name (or it is hidden); "
                                   "rename one")
    return target


def default_detector() -> str | None:
    """The detector the page starts with. Faces: what people protecting photos in bulk mostly protect (a face is
    the commonest region, 13 of the sample set's 30 cases), and with none every photo uploaded without a mask
    was only an error row. But only where OpenCV is installed: elsewhere faces would turn every such photo into
    an install hint, while none says what is plainly missing (its mask)."""
    return "faces" if service.faces_available() else None


def pair(files: Sequence[Path], detector: str | None, log: service.Log) -> tuple[list[tuple[Path, Path]],
                                                                                list[service.BatchRow]]:
    """``NAME`` → ``NAME_mask`` (:func:`backfire.io.pair_files`, the CLI's rule); a photo without a mask gets one
    from ``detector`` (``faces``/``text``), or an error row; a file that is no image at all (photo or mask) is
    an error row saying so, whatever its name claims."""
    pairs, unpaired = service.pair_files(files, "the upload")
    errors = []
    for photo, mask in list(pairs):
        bad = next((p for p in (photo, mask) if not service.is_image(p)), None)
        if bad is not None:
            pairs.remove((photo, mask))
            errors.append(service.BatchRow.skipped(photo, f"not an image: {bad.name}", mask))
    for photo in unpaired:
        if not service.is_image(photo):
            errors.append(service.BatchRow.skipped(photo, f"not an image: {photo.name}"))
            continue
        try:
            mask = _detect(photo, detector)
            log(f"{photo.name}: region found by the {detector} detector")
            pairs.append((photo, mask))
        except service.PROBLEMS as error:
            errors.append(service.BatchRow.skipped(photo, str(error)))
    return sorted(pairs), errors


def _detect(photo: Path, detector: str | None) -> Path:
    if detector is None:
        raise service.InputError(f"no mask {photo.stem}{MASK_SUFFIX}.png and no detector chosen")
    pixels, _ = service.read_photo(photo)
    mask = photo.with_name(f"{photo.stem}{MASK_SUFFIX}.png")
    if mask.exists():
        raise service.InputError(f"{mask.name} exists but is not a mask of {photo.name}")
    service.save_region(service.detect(detector, pixels), mask)
    return mask


def run(uploads: Sequence[Path], work: Path, request: service.Request, detector: str | None = None,
        on_photo: OnPhoto | None = None, on_step: service.OnStep | None = None,
        log: service.Log | None = None) -> BatchResult:
    """Protect every uploaded photo with ``request`` (checked when it was made); a photo that fails is a CSV row
    with its error, the others go on."""
    log = log or (lambda _: None)
    inbox, outbox = work / "in", work / "out"
    for folder in (inbox, outbox):
        shutil.rmtree(folder, ignore_errors=True)
    outbox.mkdir(parents=True)
    pairs, rows = pair(unpack(uploads, inbox), detector, log)
    for i, (photo, mask) in enumerate(pairs, 1):
        if on_photo is not None:
            on_photo(i, len(pairs), photo.name)
        try:
            done = service.protect(photo, mask, outbox / f"{photo.stem}.png", request, on_step, log)
        except service.PROBLEMS as error:
            rows.append(service.BatchRow.skipped(photo, str(error), mask))
            continue
        rows.append(service.BatchRow.of(service.Task(photo, mask, done.protected), done.outcome, done.protected.name))
    rows.sort(key=lambda r: r.image)
    return BatchResult(_archive(outbox, inbox, rows, work / ZIP_NAME), [r.as_dict() for r in rows])


def _archive(outbox: Path, inbox: Path, rows: list[service.BatchRow], archive: Path) -> Path:
    """The protected PNGs, their JSONs, every mask the CSV names (uploaded or detected: what ``verify`` needs
    again) and the CSV. Masks and outputs never share a name: a photo's stem never ends in ``_mask``."""
    table = service.write_batch_csv(outbox / CSV_NAME, rows, [])
    keep = sorted(p for p in outbox.iterdir() if p.suffix in (".png", ".json") and not p.name.endswith(".preview.png"))
    masks = sorted({inbox / r.mask for r in rows if r.mask and (inbox / r.mask).is_file()})
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in [*keep, *masks]:
            zf.write(path, path.name, compress_type=zipfile.ZIP_STORED if path.suffix == ".png" else None)
        zf.write(table, table.name)
    return archive


def table(rows: Sequence[dict]) -> list[list]:
    """The page's table of a batch (the columns of ``TABLE_HEADERS``), from the CSV's rows: in words, not raw
    values — protected "yes"/"no", and a skipped photo's verdict cells empty."""
    def count(done, total) -> str:
        return "" if total == "" else f"{done}/{total}"

    def said(protected) -> str:
        return "" if protected == "" else ("yes" if protected else "no")

    return [[r["image"], r["model"], said(r["protected"]), count(r["attacker_edits_failed"], r["attacker_edits"]),
             count(r["benign_edits_intact"], r["benign_edits"]), r["psnr_db"], r["error"]] for r in rows]
