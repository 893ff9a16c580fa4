#!/usr/bin/env python3
"""End-to-end browser check of `artemis serve` (standard library only).

Drives Debian's chromium through chromedriver (W3C WebDriver): opens the page, uploads IMAGE
with the file picker, waits for the answer, reads the predicted class, checks that the overlay
canvas is not blank, and saves a screenshot. Prints one JSON line; exits non-zero on failure.

usage: browser-e2e.py BASE_URL IMAGE SCREENSHOT.png
"""
import base64, json, os, socket, subprocess, sys, tempfile, time, urllib.request

W3C_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")["value"]


def main():
    base, image, shot = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]
    driver = os.environ.get("ARTEMIS_CHROMEDRIVER", "/usr/bin/chromedriver")
    browser = os.environ.get("ARTEMIS_CHROMIUM", "/usr/bin/chromium")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="artemis-chromium-")
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                call(port, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--window-size=1200,1100"]}}}}
        sid = call(port, "POST", "/session", caps)["sessionId"]
        s = f"/session/{sid}"
        call(port, "POST", f"{s}/url", {"url": base})
        el = call(port, "POST", f"{s}/element", {"using": "css selector", "value": "#file"})
        call(port, "POST", f"{s}/element/{el[W3C_ELEMENT]}/value", {"text": image})
        state, deadline = "", time.time() + 120
        while state not in ("1", "error") and time.time() < deadline:
            time.sleep(0.2)
            state = call(port, "POST", f"{s}/execute/sync",
                         {"script": "return document.body.dataset.done || '';", "args": []})
        err = call(port, "POST", f"{s}/execute/sync",
                   {"script": "return document.getElementById('error').textContent;", "args": []})
        predicted = call(port, "POST", f"{s}/execute/sync", {"script":
            "const e = document.getElementById('predicted'); return e ? e.textContent : '';",
            "args": []})
        canvas = call(port, "POST", f"{s}/execute/sync", {"script": """
            const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const colours = new Set(); let lit = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i] + d[i + 1] + d[i + 2] > 30) lit++;
              if (i % 64 === 0) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            }
            return {width: c.width, height: c.height, lit: lit, colours: colours.size};""",
            "args": []})
        png = call(port, "GET", f"{s}/screenshot")
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        call(port, "DELETE", s)
        out = {"state": state, "error": err, "predicted": predicted, "canvas": canvas,
               "screenshot": shot}
        print(json.dumps(out))
        ok = state == "1" and predicted and canvas["lit"] > 1000 and canvas["colours"] > 20
        sys.exit(0 if ok else 1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
