"""Check a built report as a reader gets it: the PDF's text, and the HTML in headless Chromium with every image loaded."""
from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from pypdf import PdfReader

SECTIONS = ["The networks", "Vanishing, shattering and exploding gradients", "Overfitting on CIFAR-10",
            "Method and provenance", "What changed"]

WRAPPER = """<!doctype html><html><body>
<iframe id="report" src="report.html" style="width:1200px;height:900px"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const images = [...document.getElementById("report").contentDocument.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const result = document.createElement("pre");
  result.id = "result";
  result.textContent = `IMAGES ${images.length} BROKEN ${broken.length} ${broken.join(" ")}`;
  document.body.appendChild(result);
});
</script></body></html>"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep CI's log to the verdicts
        pass


def check_pdf(pdf: Path) -> None:
    text = " ".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    text = re.sub(r"\s+", " ", text)
    missing = [title for title in SECTIONS if title.lower() not in text.lower()]
    assert not missing, f"{pdf}: sections missing from the PDF text: {missing}"
    assert re.search(r"test accuracy[^%]{0,80}?\d+(\.\d+)?\s?%", text, re.IGNORECASE), \
        f"{pdf}: no test accuracy with a percentage in the PDF text"
    print(f"PDF ok: {len(PdfReader(pdf).pages)} pages, every section and the test score present")


def check_html_images(out: Path) -> None:
    wrapper = out / ".ci-check.html"
    wrapper.write_text(WRAPPER)
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
                 f"http://127.0.0.1:{server.server_port}/.ci-check.html"],
                capture_output=True, text=True, timeout=120).stdout
    finally:
        server.shutdown()
        wrapper.unlink()
    match = re.search(r"IMAGES (\d+) BROKEN (\d+)([^<]*)", dom)
    assert match, "Chromium did not finish loading report.html"
    n_images, n_broken = int(match.group(1)), int(match.group(2))
    assert n_images > 0, "report.html shows no images"
    assert n_broken == 0, f"{n_broken} of {n_images} images failed to load in Chromium:{match.group(3)}"
    print(f"HTML ok: Chromium loaded all {n_images} images")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    check_pdf(out / "report.pdf")
    check_html_images(out)
