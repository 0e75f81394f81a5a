"""Screenshot a brainuad HTML report in headless Chromium (the picture in the README comes from this).

    python benchmarks/report_screenshot.py REPORT.html --out docs/figures/detect_report.png [--height 2600]

Needs Chromium (``apt-get install chromium``); prints the screenshot's path and size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("headless Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    shot = [f"--screenshot={args.out.resolve()}", f"--window-size={args.width},{args.height}"]
    page = args.report.resolve().as_uri()
    subprocess.run([browser, *flags, *shot, page], check=True, capture_output=True, timeout=180)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} kB ({args.width}×{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
