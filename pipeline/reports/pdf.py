"""Printing an HTML document to PDF with headless Chromium (the bulletin; Debian's chromium, installed by
deploy/local/system-deps.sh, with a CJK font)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from pipeline.config import environ
from pipeline.reports.bulletin import BulletinError


def chromium() -> str:
    return environ().get("CITYOPS_CHROMIUM", "chromium")


def write_pdf(html_path: Path, pdf_path: Path, timeout: float = 120.0) -> None:
    """Print the HTML file to PDF with headless Chromium (A4, no browser header or footer)."""
    with tempfile.TemporaryDirectory(prefix="cityops-pdf-") as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--no-pdf-header-footer", "--print-to-pdf-no-header",
               f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as err:
            raise BulletinError(f"no Chromium at {chromium()!r} to print the PDF (set CITYOPS_CHROMIUM, or run "
                                "deploy/local/system-deps.sh); the HTML is written") from err
        except subprocess.TimeoutExpired as err:
            raise BulletinError(f"Chromium did not print the PDF within {timeout:g} s") from err
    if res.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise BulletinError(f"Chromium failed to print the PDF (exit {res.returncode}): "
                            f"{res.stderr.decode(errors='replace')[-400:]}")


def pdf_pages(pdf_path: Path) -> int:
    """The number of pages of a PDF (its page objects)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf_path.read_bytes()))
