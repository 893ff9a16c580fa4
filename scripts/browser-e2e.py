#!/usr/bin/env python3
"""End-to-end browser check of `artemis serve` (standard library only).

Drives Debian's chromium through chromedriver (W3C WebDriver): opens the page, uploads IMAGE
with the file picker, waits for the answer, reads the predicted class, checks that the overlay
canvas is not blank, and saves a screenshot. Prints one JSON line; exits non-zero on failure.

usage: browser-e2e.py BASE_URL IMAGE SCREENSHOT.png
"""
import json, sys
from webdriver import Browser


def main():
    base, image, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    with Browser() as b:
        b.open(base)
        b.upload("#file", image)
        state = b.wait_for("return document.body.dataset.done || '';", ("1", "error"))
        err = b.js("return document.getElementById('error').textContent;")
        predicted = b.js("const e = document.getElementById('predicted'); return e ? e.textContent : '';")
        canvas = b.js("""
            const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const colours = new Set(); let lit = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
              if (i % 64 === 0) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            }
            return {width: c.width, height: c.height, lit: lit, colours: colours.size};""")
        b.screenshot(shot)
    out = {"state": state, "error": err, "predicted": predicted, "canvas": canvas,
           "screenshot": shot}
    print(json.dumps(out))
    ok = state == "1" and predicted and canvas["lit"] > 1000 and canvas["colours"] > 20
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
