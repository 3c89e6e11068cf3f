"""Classify images with a running Space (or any URL serving ``space/app.py``) via ``gradio_client``.

Usage:
    ```bash
    $ python -m scripts.predict_client alice/lung-demo tile.jpeg          # prints the result
    $ python -m scripts.predict_client http://127.0.0.1:7860 tiles/ --out results.csv
    ```
    ```python
    >>> from scripts.predict_client import connect, classify_files, write_csv
    >>> client = connect("http://127.0.0.1:7860")
    >>> rows = classify_files(client, [Path("tile.jpeg")])
    >>> rows[0]["label"], rows[0]["probabilities"]
    ('Lung adenocarcinoma', {'Lung adenocarcinoma': 0.97, ...})
    ```

Folders go through the Space's ``/predict_batch`` endpoint: ``chunk_size`` files per call
(32 by default), each chunk uploaded in one request (``scripts/space_batch.py``), with a few
calls in flight at once, so the next chunks upload while the Space scores this one; one
unreadable file only fills the ``error`` column of its own row. A Space without
``/predict_batch`` is called once per file on ``/predict``. The CSV has one column per class
name; rows from ``/predict`` (older Spaces) fill only the top three classes.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, TextIO

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from tqdm import tqdm

from imageclf.errors import ModelError
from imageclf.core.imaging import IMAGE_SUFFIXES
from imageclf.core.request import DEFAULT_SCALE
from scripts.space_batch import BATCH_API_NAME, BatchCallError, batch_calls

API_NAME = "/predict"
CHUNK_SIZE = 32     # files per /predict_batch call
IN_FLIGHT = 3       # calls at once: one runs, the others upload
FIXED_COLUMNS = ("path", "label", "name", "confidence", "abstained", "reason", "reason_code", "scale_factor")

__all__ = ["SpaceUnreachableError", "connect", "list_images", "classify_file", "classify_files",
           "write_csv", "main"]


class SpaceUnreachableError(ModelError, RuntimeError):
    """The Space cannot be reached or has no ``/predict`` endpoint; the message is one line."""

def connect(space: str, *, token: str | None = None) -> Any:
    """Open a ``gradio_client.Client`` on a Space id (``owner/name``) or a URL.

    Example:
        >>> client = connect("http://127.0.0.1:7860")

    Raises:
        SpaceUnreachableError: connection refused, unknown Space, or no ``/predict`` endpoint.
    """

    try:
        # gradio_client builds a TLS context (loading the CA bundle, ~20 ms) for every file it
        # uploads unless verification is off; a plain http:// URL has no TLS to verify.
        client = Client(space, token=token, verbose=False, download_files=False,
                        analytics_enabled=False, ssl_verify=not space.startswith("http://"))
        endpoints = _endpoints(client)
    except Exception as err:  # httpx, Hub and gradio_client errors all mean "cannot use it"
        raise SpaceUnreachableError(f"Could not reach the Space {space!r}: {_one_line(err)}") from err
    if API_NAME not in endpoints:
        raise SpaceUnreachableError(
            f"The Space {space!r} has no {API_NAME} endpoint (it has: {', '.join(endpoints) or 'none'})."
        )
    return client


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), by extension; other files are skipped."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def classify_file(client: Any, path: str | Path, *, scale: str = DEFAULT_SCALE) -> dict[str, Any]:
    """Call ``/predict`` on one file; returns the row fields (``label``: class id, ``name``: class name).

    When the Space abstains, ``label``, ``name``, ``confidence`` and ``probabilities`` are empty and
    ``abstained``/``reason`` say why: no class is named for an image the model does not answer.

    Raises:
        gradio_client.exceptions.AppError: the Space rejected the file (message says why).
        ValueError: the file does not exist.
    """

    label, result = client.predict(handle_file(str(path)), scale, api_name=API_NAME)
    shown = {str(c["label"]): float(c["confidence"]) for c in (label or {}).get("confidences") or []}
    return _row_fields(result, confidences=shown)


def classify_files(client: Any, paths: Sequence[str | Path], *, progress: bool = True, scale: str = DEFAULT_SCALE,
                   chunk_size: int = CHUNK_SIZE, in_flight: int = IN_FLIGHT) -> list[dict[str, Any]]:
    """Classify each file; a failing file gives a row with ``error`` set and the rest go on.

    Each row: ``{"path", "label", "name", "confidence", "probabilities", "abstained", "reason", "reason_code",
    "scale_factor", "error"}``, in the order of ``paths``; ``label`` is the class id and ``name`` the class
    name, as in the Space's JSON; the ``probabilities`` keys are class names (all empty when the Space
    abstains). ``scale``: the Space's scale option.

    Example:
        >>> rows = classify_files(connect("http://127.0.0.1:7860"), list_images("tiles/"))
        >>> sum(not row["error"] for row in rows)
        300
    """
    rows = [{"path": str(path), "label": "", "name": "", "confidence": None, "probabilities": {}, "abstained": None,
             "reason": "", "reason_code": "", "scale_factor": None, "error": ""} for path in paths]
    with tqdm(total=len(rows), desc="Classifying", unit="image", disable=not progress) as bar:
        if BATCH_API_NAME not in _endpoints(client):
            for row in rows:
                _fill_from_predict(client, row, scale)
                bar.update(1)
            return rows
        # Missing files never leave this machine; the rest go in chunks, a few calls at a time.
        sendable = []
        for row in rows:
            if Path(row["path"]).is_file():
                sendable.append(row)
            else:
                row["error"] = f"{row['path']} does not exist"
                bar.update(1)
        chunks = [sendable[i:i + chunk_size] for i in range(0, len(sendable), max(chunk_size, 1))]
        calls = batch_calls(client, in_flight=in_flight)
        try:
            pending: deque[tuple[list[dict[str, Any]], Any]] = deque()
            for chunk in chunks:
                pending.append((chunk, calls.submit([row["path"] for row in chunk], scale)))
                if len(pending) >= max(in_flight, 1):
                    bar.update(_fill_from_batch(calls, *pending.popleft(), scale))
            while pending:
                bar.update(_fill_from_batch(calls, *pending.popleft(), scale))
        finally:
            calls.close()
    return rows


def _endpoints(client: Any) -> dict[str, Any]:
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def _row_fields(result: dict[str, Any], *, confidences: dict[str, float] | None) -> dict[str, Any]:
    """Row fields from the Space's result JSON; an abstention names no class and no number."""
    scale = result.get("scale") or {}
    fields = {"abstained": bool(result.get("abstained")), "reason": result.get("abstain_reason") or "",
              "reason_code": result.get("abstain_code") or "", "scale_factor": scale.get("factor"), "label": "", "name": "", "confidence": None,
              "probabilities": {}}
    if not fields["abstained"]:
        names = confidences or {}
        fields.update(label=str(result["label"]), name=str(result["name"]), confidence=float(result["confidence"]),
                      probabilities={str(k): float(v) for k, v in names.items()})
    return fields


def _fill_from_predict(client: Any, row: dict[str, Any], scale: str) -> None:
    try:
        row.update(classify_file(client, row["path"], scale=scale))
    except Exception as err:  # one bad file or a dropped connection must not stop the run
        row["error"] = _error_text(err)


def _fill_from_batch(calls: Any, chunk: list[dict[str, Any]], job: Any, scale: str) -> int:
    """Copy one ``/predict_batch`` answer into its rows (a failed call marks all); returns the row count."""
    try:
        try:
            answers = job.result()
        except CancelledError:
            # gradio_client 2.7 can drop a job submitted just as its shared event stream
            # closes; classifying is idempotent, so send that chunk once more.
            answers = calls.submit([row["path"] for row in chunk], scale).result()
        if len(answers) != len(chunk):
            raise RuntimeError(f"the Space answered {len(answers)} rows for {len(chunk)} files")
    except Exception as err:  # the whole call failed (connection, queue full, ...)
        for row in chunk:
            row["error"] = _error_text(err)
        return len(chunk)
    for row, answer in zip(chunk, answers, strict=True):
        if answer.get("error"):
            row["error"] = " ".join(str(answer["error"]).split())
            continue
        row.update(_row_fields(answer, confidences=answer.get("confidences")))
    return len(chunk)


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO | str | Path) -> list[str]:
    """Write rows as CSV: path, label (class id), name (class name), confidence, one column per class name, error.

    Returns the header. Class columns are sorted by name so reruns give the same layout.
    """
    rows = list(rows)
    classes = sorted({name for row in rows for name in row["probabilities"]})
    header = [*FIXED_COLUMNS, *classes, "error"]
    if isinstance(out, (str, Path)):
        with open(out, "w", newline="", encoding="utf-8") as handle:
            return write_csv(rows, handle)
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        probs = row["probabilities"]
        abstained = "" if row["abstained"] is None else str(bool(row["abstained"])).lower()
        writer.writerow([row["path"], row["label"], row["name"], _fmt(row["confidence"]), abstained, row["reason"],
                         row["reason_code"], _fmt(row["scale_factor"]), *(_fmt(probs.get(name)) for name in classes), row["error"]])
    return header


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 1 some image failed, 2 cannot start)."""
    parser = argparse.ArgumentParser(prog="python -m scripts.predict_client",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("space", help="Space id (owner/name) or URL, e.g. http://127.0.0.1:7860")
    parser.add_argument("path", type=Path, help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, help="CSV file to write (default: a folder prints CSV to stdout)")
    parser.add_argument("--token", help="Hugging Face token for a private Space (default: HF_TOKEN / login)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--scale", default=DEFAULT_SCALE,
                        help="auto (estimate magnification from nuclei, default), native, microns per pixel or 20x")
    args = parser.parse_args(argv)

    if not args.path.exists():
        print(f"error: {args.path} does not exist", file=sys.stderr)
        return 2
    paths = list_images(args.path) if args.path.is_dir() else [args.path]
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        print(f"error: no image files ({suffixes}) under {args.path}", file=sys.stderr)
        return 2
    try:
        client = connect(args.space, token=args.token)
    except SpaceUnreachableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    single = args.path.is_file() and args.out is None
    rows = classify_files(client, paths, progress=not (single or args.no_progress), scale=args.scale)
    if single:
        print(_format_row(rows[0]), file=sys.stderr if rows[0]["error"] else sys.stdout)
    elif args.out is not None:
        write_csv(rows, args.out)
    else:
        write_csv(rows, sys.stdout)
    failed = sum(bool(row["error"]) for row in rows)
    if not single:
        where = f" -> {args.out}" if args.out else ""
        print(f"{len(rows) - failed} of {len(rows)} images classified, {failed} failed{where}",
              file=sys.stderr)
    return 1 if failed else 0


def _format_row(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"{row['path']}: error: {row['error']}"
    if row["abstained"]:
        return f"{row['path']}: not recognised: {row['reason']}"
    out = io.StringIO()
    out.write(f"{row['path']}: {row['label']} ({row['confidence']:.1%})\n")
    for name, p in sorted(row["probabilities"].items(), key=lambda item: -item[1]):
        out.write(f"  {name:<40} {p:7.2%}\n")
    return out.getvalue().rstrip("\n")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _error_text(err: BaseException) -> str:
    if isinstance(err, (AppError, BatchCallError)):
        return _one_line(err)  # the Space's own message, e.g. "not an image that can be read"
    return f"{type(err).__name__}: {_one_line(err)}"


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
