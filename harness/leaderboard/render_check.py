"""Check that ``leaderboards/index.html`` renders in headless Chromium, with every image loaded.

    python -m harness.leaderboard.render_check [leaderboards/index.html] [--screenshot page.png]

Loads the page from disk (``file://``, no server, no network) with a probe script appended to a
temporary copy beside it; after the load event the probe writes, into the DOM that Chromium dumps,
how many sections, tables and images the page has and which images failed to decode. Exit 0 when
every suite section and table is there and no image is broken, 1 otherwise, 2 when no Chromium is
found (Debian: ``apt-get install chromium``; or set ``CHROMIUM=/path/to/chrome``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const out = {sections: document.querySelectorAll('section').length, tables: document.querySelectorAll('table').length,
               images: document.images.length, broken: broken};
  const pre = document.createElement('pre'); pre.id = 'render-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--allow-file-access-from-files"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def check_page(page: Path, chromium: str, screenshot: Path | None = None) -> dict:
    """Render ``page`` and return the probe's findings (sections, tables, images, broken)."""
    text = page.read_text(encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, prefix=".render-check-", delete=False,
                                     encoding="utf-8") as tmp:
        tmp.write(text.replace("</body>", PROBE + "</body>"))
    try:
        with tempfile.TemporaryDirectory() as profile:
            cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                   Path(tmp.name).resolve().as_uri()]
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
            if screenshot is not None:
                subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot.resolve()}",
                                "--window-size=1200,2400", page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    finally:
        os.unlink(tmp.name)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the probe did not run: Chromium's DOM has no render-check result")
    import html

    return json.loads(html.unescape(found.group(1)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", nargs="?", default="leaderboards/index.html")
    p.add_argument("--screenshot", type=Path, default=None, help="also save a full-page screenshot here")
    args = p.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/chrome", file=sys.stderr)
        return 2
    page = Path(args.page)
    result = check_page(page, chromium, args.screenshot)
    expected = len(re.findall(r"<section ", page.read_text(encoding="utf-8")))
    ok = result["sections"] == expected and result["tables"] >= expected and not result["broken"]
    print(f"{page}: {result['sections']}/{expected} sections, {result['tables']} tables, {result['images']} images, "
          f"{len(result['broken'])} broken{': ' + ', '.join(result['broken']) if result['broken'] else ''} -> "
          f"{'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
