"""A minimal W3C WebDriver client (standard library only) for the browser tests: starts
Debian's chromedriver, opens headless Chromium with a fresh profile, and drives it.

Environment: ARTEMIS_CHROMEDRIVER (default /usr/bin/chromedriver), ARTEMIS_CHROMIUM
(default /usr/bin/chromium).
"""
import json, os, shutil, socket, subprocess, tempfile, time, urllib.request

W3C_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """`with Browser() as b:` a headless Chromium session; `b.call(method, path, body)` is a
    WebDriver command relative to the session."""

    def __init__(self, window="1200,1100"):
        self.driver = os.environ.get("ARTEMIS_CHROMEDRIVER", "/usr/bin/chromedriver")
        self.browser = os.environ.get("ARTEMIS_CHROMIUM", "/usr/bin/chromium")
        self.window = window

    def _call(self, method, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")["value"]

    def __enter__(self):
        self.port = free_port()
        self.profile = profile = tempfile.mkdtemp(prefix="artemis-chromium-")
        self.proc = subprocess.Popen([self.driver, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        # Without the background-networking flags Chromium keeps trying to reach Google's
        # hosts, which a closed network refuses.
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": self.browser,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", f"--window-size={self.window}"]}}}}
        self.session = f"/session/{self._call('POST', '/session', caps)['sessionId']}"
        return self

    def __exit__(self, *exc):
        try:
            self._call("DELETE", self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            # Chromium's profile (about 20 MB a session) goes with the session.
            shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method, path, body=None):
        return self._call(method, f"{self.session}{path}", body)

    def open(self, url):
        self.call("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def upload(self, css, path):
        el = self.call("POST", "/element", {"using": "css selector", "value": css})
        self.call("POST", f"/element/{el[W3C_ELEMENT]}/value", {"text": os.path.abspath(path)})

    def wait_for(self, script, done, seconds=120):
        """Polls `script` until its value is in `done` (or the time is up); returns it."""
        value, deadline = None, time.time() + seconds
        while value not in done and time.time() < deadline:
            time.sleep(0.1)
            value = self.js(script)
        return value

    def screenshot(self, path):
        import base64
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("GET", "/screenshot")))
