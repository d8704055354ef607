"""The built book as a reader sees it: every page opened in headless Chromium and checked.

Run by `make browser` (part of `make test`) after `make book`; needs Debian's chromium and
chromium-driver (the Makefile installs them). Screenshots of every page, screen by screen, land in _build/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]] + [c["file"] for part in toc.get("parts", [toc]) for c in
                             part.get("chapters", [])]
    return [n + ".html" for n in names]


PAGES = _pages()


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                 "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# the figures of a chapter: images in the article that are more than an icon
_FIGURES_JS = "Array.from(document.querySelectorAll('article img')).filter(i => i.naturalWidth > 50)"


def _open(browser, server, page):
    """Load a page; wait for the document and, on a page with TeX, for MathJax's output."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + page)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    if re.search(r'class="math', (HTML / page).read_text()):
        WebDriverWait(browser, 30).until(lambda d: d.find_elements("css selector", "mjx-container"))
    return browser


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(server, browser, page):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server, page)  # also waits for the math to render
    body = browser.find_element("tag name", "body").text
    assert len(body) > 200, f"{page} is nearly empty"
    for bad in ("Traceback (most recent call last)", "HBox(children=", "VBox(children=",
                "Error in callback", "\r"):
        assert bad not in body, f"{page} shows {bad!r}"
    assert not browser.find_elements("css selector", ".output.traceback, .output.error"), \
        f"{page} has an error output"
    # every image has loaded with a non-zero size
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete)"))
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0)"
        ".map(i => i.src)")
    assert not broken, f"{page}: images that did not load: {broken}"
    # figures are laid out, not only downloaded: a hidden or collapsed figure has no box
    hidden = browser.execute_script(
        f"return {_FIGURES_JS}.filter(i => i.getBoundingClientRect().width < 50)"
        ".map(i => i.src.slice(0, 80))")
    assert not hidden, f"{page}: figures with no visible size: {hidden}"
    _screenshot(browser, SHOTS / page.replace("/", "_").replace(".html", ""))


def _screenshot(browser, stem: Path) -> None:
    """The whole page as a reader scrolls it: one PNG per screen, ``stem_00.png`` onwards.

    Screen by screen rather than one tall capture: Chromium's beyond-the-viewport capture
    re-lays out very long pages and shifted some chapters off the left edge.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    for old in stem.parent.glob(stem.name + "_*.png"):
        old.unlink()
    total = browser.execute_script("return document.documentElement.scrollHeight")
    screen = browser.execute_script("return window.innerHeight")
    for i, top in enumerate(range(0, total, screen)):
        browser.execute_script("window.scrollTo(0, arguments[0])", top)
        browser.save_screenshot(str(stem.parent / f"{stem.name}_{i:02d}.png"))
    browser.execute_script("window.scrollTo(0, 0)")


_OVERFLOW_JS = r"""
const bad = [];
const art = document.querySelector('article');
for (const m of art.querySelectorAll('mjx-container[display="true"]')) {
  if (m.scrollWidth > m.clientWidth + 2) bad.push('equation: ' + m.textContent.slice(0, 60));
}
for (const pre of art.querySelectorAll('.cell_output pre')) {
  // lines that do not fit wrap (see _static/tu.css): fine for prose, unreadable for a table
  const probe = document.createElement('span');
  probe.textContent = 'x'.repeat(10);  // short enough never to wrap itself
  pre.appendChild(probe);
  const charWidth = probe.getBoundingClientRect().width / 10;
  pre.removeChild(probe);
  const style = getComputedStyle(pre);
  const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const fits = Math.floor(room / charWidth);
  for (const line of pre.textContent.split('\n')) {
    if (line.length > fits && /\S {2,}\S|\S \| \S/.test(line.trim()))
      bad.push(`table-like output line of ${line.length} characters (room for ${fits}): ` +
               line.slice(0, 60));
  }
}
for (const t of art.querySelectorAll('.cell_output table')) {
  const box = t.closest('.cell_output');
  if (t.getBoundingClientRect().width > box.clientWidth + 2)
    bad.push('HTML table wider than the column: ' + t.textContent.slice(0, 60));
}
return bad;
"""


@pytest.mark.parametrize("page", PAGES)
def test_nothing_runs_off_the_page(server, browser, page):
    """Equations, tables and aligned text output fit the column a reader sees (1280 px wide).

    Long prose lines in outputs wrap (as in JupyterLab); a table that wraps or an equation
    that needs a horizontal scroll bar hides the very number the text discusses.
    """
    _open(browser, server, page)
    bad = browser.execute_script(_OVERFLOW_JS)
    assert not bad, f"{page}: content wider than the column:\n" + "\n".join(bad)


def test_chapters_have_figures(server, browser):
    """Chapters with experiments show their plots (at least one image each)."""
    missing = []
    for page in PAGES:
        if not re.match(r"book/0[1-7]_", page):  # the FAQ, intro and references may have none
            continue
        _open(browser, server, page)
        if not browser.execute_script(f"return {_FIGURES_JS}.length"):
            missing.append(page)
    assert not missing, f"chapters without a figure: {missing}"


def test_internal_links_resolve(server, browser):
    bad = []
    for page in PAGES:
        _open(browser, server, page)
        hrefs = browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for href in hrefs:
            url, frag = urldefrag(href)
            if not url.startswith(server):
                continue
            target = HTML / urlparse(url).path.lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                bad.append(f"{page} -> {href}")
            elif frag and target.suffix == ".html":
                html = target.read_text()
                if f'id="{frag}"' not in html and f"id='{frag}'" not in html:
                    bad.append(f"{page} -> {href} (no anchor)")
    assert not bad, "broken internal links:\n" + "\n".join(sorted(set(bad)))


def test_launch_and_repository_buttons(server, browser):
    nb_pages = [p for p in PAGES if (ROOT / p.replace(".html", ".ipynb")).exists()]
    assert nb_pages
    for page in nb_pages:
        html = (HTML / page).read_text()
        name = page.replace(".html", ".ipynb")
        colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', html)
        binder = re.findall(r'href="(https://mybinder\.org/[^"]+)"', html)
        assert colab and colab[0].endswith("/" + name), f"{page}: Colab button {colab}"
        assert binder and binder[0].endswith("/" + name), f"{page}: Binder button {binder}"
        assert "github.com/transfer-utils/transfer-learning-book" in html
