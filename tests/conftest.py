"""Shared fixtures: the repository root, the built book served over HTTP, and headless Chromium.

The markers used here (``slow``, ``browser``, ``book``) are declared in pyproject.toml.

Tests that need something the machine may lack (the built book, Debian's chromium) *skip* with
a message saying how to get it, except under ``CI=true``, where a missing prerequisite is a
failure: CI must never pass by skipping the browser tests.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_HTML = REPO_ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under CI=true (where every prerequisite must be present)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def mnist_train_split():
    """The MNIST train split must be readable (``VQDBOOK_DATA``): skipped without it, an error under CI=true."""
    from vqdbook.data import DataUnavailableError, load_dataset

    try:
        load_dataset("mnist", "train", n=10)
    except DataUnavailableError:
        skip_or_fail("MNIST train split unavailable (set VQDBOOK_DATA)")


@pytest.fixture
def rejects_bad_inputs():
    """A check every attack passes: labels of the wrong length or out of range, images outside [0, 1]
    and images without a batch dimension are refused with a ValueError naming what is wrong."""
    import torch

    def check(atk, x, y):
        with pytest.raises(ValueError, match="y must be"):
            atk(x[:4], y[:3])
        with pytest.raises(ValueError, match="labels"):
            atk(x[:2], torch.tensor([0, 10]))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            atk(x[:2] * 2 + 0.5, y[:2])
        with pytest.raises(ValueError, match="B, C, H, W"):
            atk(x[0], y[:1])

    return check


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def book_html() -> Path:
    """The built HTML book (``_build/html``); skips (fails in CI) when it has not been built."""
    if not (BOOK_HTML / "index.html").is_file():
        skip_or_fail(f"the book is not built: {BOOK_HTML / 'index.html'} is missing; run `make book` first")
    return BOOK_HTML


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture(scope="session")
def book_server(book_html: Path):
    """Serve ``_build/html`` on 127.0.0.1 at a free port; yields the base URL (ending in '/').

    Pages are served over HTTP rather than opened as file:// URLs, which breaks requirejs module
    loading and some fetches in Chromium.
    """
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright's sync API (``playwright install`` is never used)."""
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing; install Debian's chromium (scripts/ensure_chromium.sh does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the Python package playwright is not installed (it is in requirements.txt: run `make env`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()
