"""Live widgets: Voilà (bound to 127.0.0.1) serves the quantizer explorer; Playwright + Debian
Chromium moves the k slider and the quantized picture must change. The server is killed by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": "from vqdbook import widgets\n"
                         "widgets.quantizer_explorer(dataset='mnist', index=0, method='prd', s=2, k=2, n_images=10)"}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def voila_url(tmp_path):
    nb = tmp_path / "explorer.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    port = _free_port()
    voila = Path(sys.executable).with_name("voila")
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([str(voila), str(nb), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
                             "--ServerApp.ip=127.0.0.1", "--show_tracebacks=True"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"voila exited early: {(tmp_path / 'voila.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("voila did not start listening within 60 s")
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # voila and its kernel
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_moving_k_changes_the_quantized_image(browser, voila_url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(voila_url, timeout=120_000)
    img = page.locator(".vqdbook-quantizer-explorer img").first
    img.wait_for(state="visible", timeout=180_000)
    page.wait_for_function("(el) => el.src && el.src.startsWith('blob:') || el.src.startsWith('data:')",
                           arg=img.element_handle(), timeout=60_000)
    before = img.get_attribute("src")
    slider = page.locator(".widget-slider", has_text="k (centres)").first
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    page.wait_for_function("([el, old]) => el.src !== old", arg=[img.element_handle(), before], timeout=60_000)
    readout = slider.locator(".widget-readout").first.inner_text()
    assert readout.strip() == "5"
    assert img.get_attribute("src") != before
    assert not errors, errors
    page.close()
