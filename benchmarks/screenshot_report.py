"""Open a report.html in headless Chromium: a screenshot, and checks of what a reader sees.

    python benchmarks/screenshot_report.py runs/study-demo/report/report.html --out shot.png

Checks, at the window size of the screenshot (default 1280×2000):
- the page is no wider than the window (`document.documentElement.scrollWidth`), every table box
  ends inside it (a wide table scrolls in its own box);
- the verdict ("Prompt or fine-tune?") is there and starts within the first screen;
- chains are labelled by name: no row label holds a folder path;
- every in-page link (`href="#..."`) has its target.

The measurements come from a few lines of JS run in the page: the report's folder is copied to a
temporary one, the copy gets the script, and Chromium's `--dump-dom` returns what it wrote. The
report itself is not touched. Needs Chromium (Debian: `apt-get install chromium`). Prints the
figures and the machine; exits 1 when a check fails.
"""

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-headless-shell", "google-chrome", "chromium-browser")
MEASURE = """
<script>
addEventListener('load', function () {
  var root = document.documentElement, width = root.clientWidth;
  var verdict = document.querySelector('.verdict');
  var boxes = Array.from(document.querySelectorAll('.table-box'));
  var wide = [];
  document.querySelectorAll('body *').forEach(function (el) {
    if (el.closest('.table-box') && !el.classList.contains('table-box')) return;
    var r = el.getBoundingClientRect();
    if (r.width && r.right > width + 1 && wide.length < 5)
      wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                ' right=' + Math.round(r.right));
  });
  var labels = Array.from(document.querySelectorAll('tbody th[scope=row]'))
    .map(function (th) { return th.innerText.trim(); });
  var missing = Array.from(document.querySelectorAll('a[href^="#"]'))
    .map(function (a) { return decodeURIComponent(a.getAttribute('href').slice(1)); })
    .filter(function (id) { return id && !document.getElementById(id); });
  var out = {
    window_width: window.innerWidth, client_width: width, scroll_width: root.scrollWidth,
    page_height: root.scrollHeight,
    verdict: verdict ? {
      top: Math.round(verdict.getBoundingClientRect().top),
      height: Math.round(verdict.getBoundingClientRect().height),
      heading: (verdict.querySelector('h2') || verdict).innerText.split('\\n')[0]
    } : null,
    table_boxes: boxes.length,
    table_boxes_outside: boxes.filter(function (b) {
      return b.getBoundingClientRect().right > width + 1; }).length,
    table_boxes_scrolling: boxes.filter(function (b) {
      return b.scrollWidth > b.clientWidth; }).length,
    wider_than_window: wide,
    row_labels: labels,
    missing_link_targets: Array.from(new Set(missing)).slice(0, 5)
  };
  var pre = document.createElement('pre');
  pre.id = '__measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""
PATH_IN_LABEL = re.compile(r"(^|[\s=(])(/|~/|\./|\.\./)|\w/\w+/")


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    sys.exit(
        f"no Chromium found (tried {', '.join(BROWSERS)}); on Debian: apt-get install chromium"
    )


def chromium(browser: str, url: str, width: int, height: int, *flags: str) -> str:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=5000",
        f"--window-size={width},{height}",
        *flags,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        sys.exit(f"{Path(browser).name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def measure(browser: str, report: Path, width: int, height: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="report-shot-") as scratch:
        copy = Path(scratch) / "report"
        shutil.copytree(report.parent, copy, ignore=shutil.ignore_patterns("*.sqlite", "*.csv"))
        page = copy / report.name
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        dom = chromium(browser, page.as_uri(), width, height, "--dump-dom")
    found = re.search(r'<pre id="__measure">(.*?)</pre>', dom, re.S)
    if not found:
        sys.exit("the measuring script wrote nothing: the page did not finish loading")
    raw = found[1].replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(raw.replace("&amp;", "&"))


def checks(figures: dict, height: int) -> list[tuple[str, bool, str]]:
    verdict = figures["verdict"]
    paths = [label for label in figures["row_labels"] if PATH_IN_LABEL.search(label)]
    return [
        (
            "page within the window width",
            figures["scroll_width"] <= figures["window_width"],
            f"scrollWidth {figures['scroll_width']} px, window {figures['window_width']} px"
            + (f"; wider: {figures['wider_than_window']}" if figures["wider_than_window"] else ""),
        ),
        (
            "every table box inside the page",
            figures["table_boxes_outside"] == 0,
            f"{figures['table_boxes']} boxes, {figures['table_boxes_outside']} outside, "
            f"{figures['table_boxes_scrolling']} scroll inside",
        ),
        (
            "verdict visible in the first screen",
            verdict is not None and verdict["height"] > 0 and verdict["top"] < height,
            "no verdict section"
            if verdict is None
            else f"{verdict['heading']!r} at y={verdict['top']}",
        ),
        (
            "chains labelled by name, no folder",
            not paths,
            f"{len(figures['row_labels'])} row labels"
            + (f"; with paths: {paths}" if paths else ""),
        ),
        (
            "every in-page link has a target",
            not figures["missing_link_targets"],
            ", ".join(figures["missing_link_targets"]) or "all found",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to open")
    parser.add_argument("--out", type=Path, default=Path("report-screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    report = args.report.resolve()
    if not report.is_file():
        sys.exit(f"{args.report}: no such file; give the path of a report.html")
    browser = find_browser()
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.node()}, {platform.system()} {platform.release()}; {version}")
    chromium(
        browser, report.as_uri(), args.width, args.height, f"--screenshot={args.out.resolve()}"
    )
    print(f"screenshot: {args.out} ({args.width}×{args.height})")
    figures = measure(browser, report, args.width, args.height)
    print(f"page height: {figures['page_height']} px")
    failed = 0
    for name, ok, detail in checks(figures, args.height):
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
