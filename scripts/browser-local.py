#!/usr/bin/env python3
"""Drives the page that classifies in the browser (`artemis serve`'s /local/, or a folder
written by `artemis export --format web` on any static host) in headless Chromium: waits for
the model to load, then classifies each IMAGE with the file picker and reads back what the
page computed: probabilities, logits and the input tensor it built (float32 bytes, base64).
Prints one JSON object; exits non-zero when the page never got ready.

usage: browser-local.py PAGE_URL SCREENSHOT.png IMAGE...
"""
import json, sys
from webdriver import Browser

RESULT = """
const r = window.artemisResult;
const b = new Uint8Array(r.tensor.buffer);
let s = "";
for (let i = 0; i < b.length; i += 32768) s += String.fromCharCode(...b.subarray(i, i + 32768));
return {file: r.file, probabilities: Array.from(r.probabilities), logits: r.logits, ms: r.ms,
        tensor: btoa(s), predicted: document.getElementById('predicted').textContent};"""


def main():
    url, shot, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    out = {"ready": False, "results": []}
    with Browser() as b:
        b.open(url)
        ready = b.wait_for("return document.body.dataset.ready || document.body.dataset.done || '';",
                           ("1", "error"))
        out["ready"] = ready == "1"
        out["status"] = b.js("return document.getElementById('status').textContent;")
        out["isolated"] = b.js("return self.crossOriginIsolated;")
        if out["ready"]:
            out["graph"] = b.js(
                "return fetch('model.json').then((r) => r.json()).then((m) => m.graph);")
        for image in images if out["ready"] else []:
            b.js("document.body.dataset.done = ''; window.artemisResult = null;")
            b.upload("#file", image)
            state = b.wait_for("return document.body.dataset.done || '';", ("1", "error"))
            if state == "1":
                out["results"].append(b.js(RESULT))
            else:
                out["results"].append({"file": image, "error": b.js(
                    "return document.getElementById('error').textContent;")})
        out["error"] = b.js("return document.getElementById('error').textContent;")
        b.screenshot(shot)
    print(json.dumps(out))
    sys.exit(0 if out["ready"] else 1)


if __name__ == "__main__":
    main()
