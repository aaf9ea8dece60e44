"""The built book, opened in headless Chromium with the network cut off.

Every page listed in ``_toc.yml`` is loaded from a local HTTP server; any request to another
host is aborted, so the checks prove the pages work offline. Per page:

* no JavaScript error and no console error (except known, harmless ones listed below);
* no failed or 4xx/5xx request to the local server (a missing image, script or font);
* every ``<img>`` decoded (``naturalWidth > 0``);
* every math element typeset by the vendored MathJax;
* if the page embeds ipywidgets, the saved widget state is on the page and every widget view
  was rendered by the vendored widget manager, with a nonzero size.

Page-specific expectations (e.g. "chapter 1 has a table") go in ``EXPECTATIONS``; a chapter
added to ``_toc.yml`` is checked automatically. Screenshots are written to
``_build/browser-screenshots/`` for a human to look at.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# Console/page errors that are known and harmless. sphinx-thebe 0.3 declares THEBE_JS_URL
# with `const` in an inline script and again in sphinx-thebe.js.
IGNORED_ERRORS = [
    re.compile(r"THEBE_JS_URL"),
]
# Requested by the browser itself, not by the page (the book sets no favicon).
IGNORED_LOCAL_PATHS = {"/favicon.ico"}
# Every wait below waits on what the test checks (the article, the typeset math, the widget
# views), with a timeout generous enough for a machine whose CPUs are busy with other jobs: a page
# once needed more than 30 s to reach its load state there. A slow page costs time, not a failure.
WAIT_MS = 120_000


@dataclass(frozen=True)
class Expect:
    min_tables: int = 0      # <table> elements in the article body
    min_images: int = 0      # <img> elements in the article body
    widgets: bool | None = None  # True: must embed widgets; False: must not; None: either


# Extra expectations per page (docname as in _toc.yml). Pages not listed get Expect().
EXPECTATIONS: dict[str, Expect] = {
    "book/01_data_and_classifiers": Expect(min_tables=1, min_images=1),
    # Tables 1 and 2 and the reproduction study lead with figures; the exact tables follow
    "book/03_robust_accuracy": Expect(min_tables=6, min_images=4),
}


def _toc_docnames() -> list[str]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    names: list[str] = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return [re.sub(r"\.(ipynb|md)$", "", n) for n in names]


PAGES = _toc_docnames()


def _is_local(url: str, base: str) -> bool:
    return url.startswith(base) or url.startswith(("data:", "blob:", "about:"))


def _screenshot_dir() -> Path:
    d = REPO_ROOT / "_build" / "browser-screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.book
@pytest.mark.browser
@pytest.mark.timeout(600)
@pytest.mark.parametrize("docname", PAGES)
def test_page_renders_offline(docname, book_html, book_server, browser):
    html_file = book_html / f"{docname}.html"
    assert html_file.is_file(), f"{docname} is in _toc.yml but {html_file} was not built"
    expect = EXPECTATIONS.get(docname, Expect())
    source = html_file.read_text(encoding="utf-8")
    n_views = source.count(f'type="{WIDGET_VIEW}"')
    has_state = f'type="{WIDGET_STATE}"' in source

    errors: list[str] = []
    blocked: list[str] = []

    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.set_default_navigation_timeout(WAIT_MS)
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    def route(r):
        if _is_local(r.request.url, book_server):
            r.continue_()
        else:  # the book must not need the network: cut it off
            blocked.append(r.request.url)
            r.abort()

    def on_console(msg):
        if msg.type != "error":
            return
        where = msg.location.get("url", "") if msg.location else ""
        if where and not _is_local(where, book_server):
            return  # a blocked remote resource: not an error of the book
        if "Failed to load resource" in msg.text and urlparse(where).path in IGNORED_LOCAL_PATHS:
            return
        if any(p.search(msg.text) for p in IGNORED_ERRORS):
            return
        errors.append(f"console error: {msg.text} ({where})")

    def on_pageerror(exc):
        text = f"{exc.name}: {exc.message}" if hasattr(exc, "name") else str(exc)
        if not any(p.search(text) for p in IGNORED_ERRORS):
            errors.append(f"uncaught exception: {text}")

    def on_requestfailed(req):
        if _is_local(req.url, book_server) and urlparse(req.url).path not in IGNORED_LOCAL_PATHS:
            errors.append(f"local request failed: {req.url} ({req.failure})")

    def on_response(resp):
        if resp.status >= 400 and _is_local(resp.url, book_server) \
                and urlparse(resp.url).path not in IGNORED_LOCAL_PATHS:
            errors.append(f"HTTP {resp.status} for {resp.url}")

    def wait_for(what, js, arg):
        try:
            page.wait_for_function(js, arg=arg, timeout=WAIT_MS)
            return
        except PlaywrightTimeoutError:
            pass
        pytest.fail(f"{docname}: {what}: not done after {WAIT_MS / 1000:.0f} s. Errors so far:\n  "
                    + "\n  ".join(errors or ["(none)"])
                    + (f"\n(blocked remote requests: {blocked})" if blocked else ""), pytrace=False)

    page.route("**/*", route)
    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    page.on("requestfailed", on_requestfailed)
    page.on("response", on_response)
    try:
        article = "article.bd-article"
        page.goto(book_server + f"{docname}.html", wait_until="domcontentloaded", timeout=WAIT_MS)
        try:
            page.wait_for_selector(article, state="attached", timeout=WAIT_MS)
        except PlaywrightTimeoutError:
            pytest.fail(f"{docname}: no {article} after {WAIT_MS / 1000:.0f} s", pytrace=False)

        # images: force lazy ones to load, wait until each is decoded (or has failed)
        broken = page.evaluate(
            """async () => {
                const imgs = Array.from(document.images);
                imgs.forEach(i => { i.loading = 'eager'; });
                await Promise.allSettled(imgs.map(i => i.decode()));
                return imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                           .map(i => i.currentSrc || i.src || i.outerHTML.slice(0, 120));
            }"""
        )
        assert not broken, f"{docname}: images that did not load/decode: {broken}"

        n_tables = page.locator(f"{article} table").count()
        assert n_tables >= expect.min_tables, \
            f"{docname}: expected at least {expect.min_tables} <table>, found {n_tables}"
        n_imgs = page.locator(f"{article} img").count()
        assert n_imgs >= expect.min_images, \
            f"{docname}: expected at least {expect.min_images} <img>, found {n_imgs}"

        # math: every math node becomes an <mjx-container> once MathJax (vendored) has run
        n_math = page.locator(f"{article} .math").count()
        if n_math:
            wait_for("math typeset by MathJax",
                     """(n) => document.querySelectorAll('article.bd-article mjx-container').length >= n""",
                     n_math)

        # widgets
        if expect.widgets is True:
            assert n_views, f"{docname}: expected embedded widgets, found none"
        if expect.widgets is False:
            assert not n_views, f"{docname}: expected no widgets, found {n_views}"
        if n_views:
            assert has_state, (f"{docname}: {n_views} widget views but no saved widget state on the page; "
                               "the notebook's metadata.widgets was lost (execution or cache)")
            wait_for("every widget view rendered by the widget manager",
                     """(type) => Array.from(document.querySelectorAll(`script[type="${type}"]`))
                            .every(s => s.parentElement.querySelector('.jupyter-widgets'))""",
                     WIDGET_VIEW)
            sizes = page.evaluate(
                """(type) => Array.from(document.querySelectorAll(`script[type="${type}"]`)).map(s => {
                       const w = s.parentElement.querySelector('.jupyter-widgets');
                       const r = w.getBoundingClientRect();
                       return [w.className, r.width, r.height];
                   })""",
                WIDGET_VIEW)
            empty = [s for s in sizes if not (s[1] > 0 and s[2] > 0)]
            assert not empty, f"{docname}: widgets rendered with zero size: {empty}"
            text = page.locator(article).inner_text()
            for marker in ("Error displaying widget", "Error rendering Jupyter widget",
                           "Could not create model", "Class .* not found"):
                assert not re.search(marker, text), f"{docname}: widget error on page: {marker!r}"

        # every script, stylesheet and image request has finished (so a failed one was recorded)
        page.wait_for_load_state("load", timeout=WAIT_MS)
        page.wait_for_timeout(300)  # let late console messages arrive
        page.screenshot(path=str(_screenshot_dir() / f"{docname.replace('/', '__')}.png"), full_page=True)
    finally:
        context.close()

    assert not errors, f"{docname}: " + "\n".join(errors) + (
        f"\n(blocked remote requests: {blocked})" if blocked else "")


@pytest.mark.book
def test_no_cdn_scripts(book_html):
    """No built page loads a script from a CDN: require.js, the widget manager and MathJax are
    served from _static (see _config.yml and _vendor/README.md)."""
    offenders = {}
    for html in sorted(book_html.rglob("*.html")):
        srcs = re.findall(r'<script[^>]*\ssrc="(https?://[^"]+)"', html.read_text(encoding="utf-8"))
        if srcs:
            offenders[str(html.relative_to(book_html))] = srcs
    assert not offenders, f"pages loading remote scripts: {offenders}"


@pytest.mark.book
def test_vendored_files_are_published(book_html):
    """Every vendored file is in _static/ of the built book, byte for byte."""
    for folder in ("static", "local"):
        for src in sorted((REPO_ROOT / "_vendor" / folder).iterdir()):
            out = book_html / "_static" / src.name
            assert out.is_file(), f"{src.name} is not in _build/html/_static (html_static_path in _config.yml)"
            assert out.read_bytes() == src.read_bytes(), (
                f"_build/html/_static/{src.name} differs from _vendor/{folder}/{src.name}: "
                "Sphinx does not recopy static files on an incremental build; run `make clean-book`")


def test_vendored_checksums_match_readme():
    """_vendor/README.md records the SHA-256 of each file scripts/vendor_js.sh fetched."""
    readme = (REPO_ROOT / "_vendor" / "README.md").read_text()
    recorded = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M))
    files = sorted(p for p in (REPO_ROOT / "_vendor" / "static").iterdir() if p.is_file())
    assert files, "_vendor/static is empty: run scripts/vendor_js.sh"
    assert set(recorded) == {p.name for p in files}, \
        f"_vendor/README.md lists {sorted(recorded)}, _vendor/static has {[p.name for p in files]}"
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == recorded[p.name], \
            f"_vendor/static/{p.name} does not match its SHA-256 in _vendor/README.md"
