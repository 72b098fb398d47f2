"""Open every page of the built book in headless Chromium from file:// and check what a reader would see.

Per page: no request leaves the machine (only file:, data:, blob:, about:), math is typeset by MathJax (output
elements present wherever the page has math), every image loads, and every internal link points at an existing
page and anchor. Screenshots of the summary and one claim page are saved beside the HTML as build artefacts.

Usage: python tests/browser/check_book.py _build/html
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from playwright.sync_api import sync_playwright

LOCAL = ("file", "data", "blob", "about")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps"]  # fmt: skip
SCREENSHOTS = {"book/intro.html": "summary.png", "book/stragglers.html": "stragglers.png"}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("error: no Chromium found; install it (Debian: apt-get install chromium) — `make test` does this")


def ids_of(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page not in cache:
        cache[page] = set(re.findall(r'\sid="([^"]+)"', page.read_text(errors="replace")))
    return cache[page]


def check(root: Path) -> list[str]:
    pages = sorted(p for p in root.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    if not pages:
        return [f"no HTML pages under {root}; build the book first (make html)"]
    problems: list[str] = []
    id_cache: dict[Path, set[str]] = {}
    shots = root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=ARGS)
        for page_path in pages:
            name = page_path.relative_to(root).as_posix()
            redirect = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', page_path.read_text(), re.IGNORECASE)
            if redirect:  # a redirect stub (index.html): its target must exist
                if not (page_path.parent / redirect.group(1)).exists():
                    problems.append(f"{name}: redirects to a missing page {redirect.group(1)}")
                continue
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            remote: list[str] = []
            failed: list[str] = []
            page.on("request", lambda r, remote=remote: urlparse(r.url).scheme not in LOCAL and remote.append(r.url))
            page.on("requestfailed", lambda r, failed=failed: failed.append(r.url))
            page.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            problems += [f"{name}: request to the network: {u}" for u in remote]
            problems += [f"{name}: failed to load {u}" for u in failed if urlparse(u).scheme in LOCAL]
            if page.locator(".math").count():
                try:  # every math element holds MathJax output
                    page.wait_for_function(
                        "Array.from(document.querySelectorAll('.math')).every(e => e.querySelector('mjx-container'))",
                        timeout=30_000,
                    )
                except Exception:
                    left = page.evaluate(
                        "Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container'))"
                        ".length"
                    )
                    problems.append(
                        f"{name}: MathJax left {left} of {page.locator('.math').count()} formulas untypeset"
                    )
                errors = page.locator("mjx-merror").count()
                if errors:
                    problems.append(f"{name}: {errors} MathJax error(s)")
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            )
            problems += [f"{name}: image does not load: {src}" for src in broken]
            for href in page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                u = urlparse(href)
                if u.scheme != "file":
                    continue
                target = Path(unquote(u.path))
                if not target.exists():
                    problems.append(
                        f"{name}: broken link to {target.relative_to(root) if root in target.parents else target}"
                    )
                elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in ids_of(target, id_cache):
                    problems.append(f"{name}: link to a missing anchor {target.name}#{u.fragment}")
            if name in SCREENSHOTS:
                page.screenshot(path=str(shots / SCREENSHOTS[name]), full_page=True)
            page.close()
        browser.close()
    print(f"checked {len(pages)} pages under {root}; screenshots in {shots}")
    return problems


if __name__ == "__main__":
    problems = check(Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
    for p in problems:
        print("FAIL", p)
    sys.exit(1 if problems else 0)
