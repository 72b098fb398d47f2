"""Open every page of the built book in headless Chromium from file:// and check what a reader would see.

Per page: no request leaves the machine (only file:, data:, blob:, about:), math is typeset by MathJax (output
elements present wherever the page has math), every image loads, and every internal link points at an existing
page and anchor. The layout, as displayed at 1280 px: no visible code input (code is removed or behind a toggle), no
table or displayed equation wider than the article column, no figure shown at under 60 % of its natural width, and no
debris (IPython banners, NaN, True/False cells, warnings, progress bars, code keys in the prose). Every claim page
opens with a verdict admonition (class ``verdict``) before its first section heading. A full-page screenshot of every
page is saved in ``_build/screenshots/`` as a build artefact.

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
#: Pages that state a claim's verdict (the rest: method, base models, discussion, appendix).
CLAIM_PAGES = ("model_agnostic", "stragglers", "byzantine", "parm", "private_approxifer", "privacy", "codes", "serving")
MIN_FIGURE_SCALE = 0.6  # a figure shown at less than this share of its natural width has illegible labels
# Debris in the visible text of the article (code, math and citations excluded): IPython banners, NaN, warnings and
# progress bars anywhere; snake_case keys (names from the code) in the prose, headings and table headers.
DEBRIS = re.compile(r"Exception reporting mode|\bNaN\b|\bnan\b|Warning\b|warnings\.warn|\d+it/s|\|[█▏▎▍▌▋▊▉ ]{3,}\|")
KEYS = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
LAYOUT = """(scale) => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const shown = e => (e.checkVisibility ? e.checkVisibility() : true) && e.getClientRects().length > 0;
  const out = {column: column, code: 0, tables: [], equations: [], figures: [], cells: [], verdict: 'missing'};
  out.code = [...article.querySelectorAll('.cell_input')].filter(shown).length;
  for (const t of article.querySelectorAll('table')) {
    const w = t.getBoundingClientRect().width;
    if (shown(t) && w > column + 1) out.tables.push(Math.round(w));
  }
  for (const m of article.querySelectorAll('mjx-container[display="true"]')) {
    const w = m.firstElementChild ? m.firstElementChild.getBoundingClientRect().width : 0;
    if (shown(m) && w > column + 1) out.equations.push(Math.round(w));
  }
  for (const i of article.querySelectorAll('img')) {
    if (shown(i) && i.naturalWidth > 0 && i.clientWidth / i.naturalWidth < scale)
      out.figures.push(`${i.clientWidth}/${i.naturalWidth} px`);
  }
  for (const c of article.querySelectorAll('td')) {
    const t = c.textContent.trim();
    if (shown(c) && ['True', 'False', 'None', 'nan', 'NaN'].includes(t)) out.cells.push(t);
  }
  const clone = article.cloneNode(true);
  for (const e of clone.querySelectorAll('code, pre, .math, mjx-container, script, style, details:not([open]), '
                                          + '.bibtex, .citation, a.reference.external'))
    e.remove();
  out.text = clone.innerText;
  out.prose = [...clone.querySelectorAll('p, li, h1, h2, h3, thead th, caption, dt, .admonition-title')]
    .map(e => e.innerText).join(' ');
  const verdict = article.querySelector('.admonition.verdict');
  const heading = article.querySelector('section section > h2, section > h2');
  if (verdict) out.verdict = (!heading || (verdict.compareDocumentPosition(heading) & Node.DOCUMENT_POSITION_FOLLOWING))
    ? 'first' : 'after a heading';
  return out;
}"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("error: no Chromium found; install it (Debian: apt-get install chromium) — `make test` does this")


def ids_of(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page not in cache:
        cache[page] = set(re.findall(r'\sid="([^"]+)"', page.read_text(errors="replace")))
    return cache[page]


def layout_problems(name: str, seen: dict) -> list[str]:
    """What a reader would trip over on page `name`, from the measurements of `LAYOUT`."""
    out = []
    if seen["code"]:
        out.append(f"{name}: {seen['code']} code input(s) visible (tag the cells remove-input or hide-input)")
    out += [f"{name}: a table {w} px wide in a {seen['column']:.0f} px column" for w in seen["tables"]]
    out += [f"{name}: an equation {w} px wide in a {seen['column']:.0f} px column" for w in seen["equations"]]
    out += [f"{name}: a figure shown at {f} of its natural width (< {MIN_FIGURE_SCALE:.0%})" for f in seen["figures"]]
    out += [f"{name}: a table cell reads {c!r}" for c in sorted(set(seen["cells"]))]
    found = lambda pattern, text: sorted({m.group(0) for m in pattern.finditer(text)})  # noqa: E731
    out += [f"{name}: debris in the text: {m!r}" for m in found(DEBRIS, seen["text"])]
    out += [f"{name}: a code key in the prose: {m!r}" for m in found(KEYS, seen["prose"])]
    stem = Path(name).stem
    if stem in CLAIM_PAGES and seen["verdict"] != "first":
        out.append(f"{name}: verdict admonition {seen['verdict']} (a claim page opens with one, class 'verdict')")
    return out


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
            if name.startswith("book/"):  # the book's pages (not the generated indexes)
                problems += layout_problems(name, page.evaluate(LAYOUT, MIN_FIGURE_SCALE))
            page.screenshot(path=str(shots / (name.removeprefix("book/").replace("/", "_")[:-5] + ".png")),
                            full_page=True)  # fmt: skip
            page.close()
        browser.close()
    print(f"checked {len(pages)} pages under {root}; screenshots in {shots}")
    return problems


if __name__ == "__main__":
    problems = check(Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
    for p in problems:
        print("FAIL", p)
    sys.exit(1 if problems else 0)
