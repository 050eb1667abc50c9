"""Screenshots of every UI page at 1280x800 for docs/images/ (run by hand against a running `tuneloop ui`).

    python tests/ui/screenshots.py http://127.0.0.1:7860 docs/images --run quickstart --compare other-run \
        --live some-running-run --prompt "How long do I have to return a bike?"

Chromium is Debian's (/usr/bin/chromium), driven headless by Playwright. The chat step asks both models and
sends a correction, so run it against a scratch store if that matters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--run", required=True, help="a finished run (run page, chat)")
    parser.add_argument("--compare", help="a second run for the compare view")
    parser.add_argument("--live", help="a run training right now (the live view)")
    parser.add_argument("--example", default="quickstart.yaml", help="an example config for the New run pages")
    parser.add_argument("--prompt", default="How long do I have to return a bike?")
    parser.add_argument("--correction", default="You can return it within 45 days of delivery.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.set_default_timeout(300_000)

        def shot(name: str, path: str | None = None) -> None:
            if path is not None:
                page.goto(args.url + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / f"ui-{name}.png"))

        shot("runs", "/runs")
        if args.compare:
            shot("compare", f"/compare?run={args.run}&run={args.compare}")
        shot("new-run", "/new")
        page.select_option("#example-select", args.example)
        page.click("#use-example")
        page.fill("input[name='train.learning_rate']", "fast")
        page.click("#start-button")
        shot("new-run-audit-and-validation")
        if args.live:
            page.goto(f"{args.url}/runs/{args.live}")
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "ui-live-training.png"))
        shot("run-report", f"/runs/{args.run}")
        page.goto(f"{args.url}/chat?run={args.run}")
        page.fill("#chat-prompt", args.prompt)
        page.click("#chat-send")
        page.wait_for_selector("section.pane >> nth=1")
        shot("chat")
        pane = page.locator("section.pane").last
        pane.locator("textarea.correction").fill(args.correction)
        pane.locator("text=Send correction").click()
        page.wait_for_selector("#feedback-noted")
        shot("inbox", "/inbox")
        shot("studies", "/studies")
        browser.close()


if __name__ == "__main__":
    main()
