#!/usr/bin/env python3
"""Bounded load test of `artemis serve` (standard library only, loopback only).

CLIENTS threads each post IMAGE to /api/v1/predict in a loop for SECONDS, then stop. Prints
requests/s, p50/p99 latency, every non-200 answer, and the server's resident memory (VmRSS
of PID) after a warm-up and at the end. Exits 1 on any error or when memory grew by more than
--rss-bound-mb after the warm-up.
"""
import argparse, json, os, threading, time, urllib.parse, http.client


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def body_for(image):
    boundary = "artemisload"
    name = os.path.basename(image)
    with open(image, "rb") as f:
        data = f.read()
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--rss-bound-mb", type=float, default=64)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    ctype, body = body_for(a.image)
    lat, errors, lock = [], [], threading.Lock()
    start = time.time()
    warm_end = start + a.warmup
    end = warm_end + a.seconds
    rss = {}

    def client():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while time.time() < end:
            t0 = time.time()
            try:
                conn.request("POST", "/api/v1/predict", body, {"Content-Type": ctype})
                r = conn.getresponse()
                payload = r.read()
                ok = r.status == 200 and json.loads(payload).get("class")
            except Exception as e:  # connection problems count as errors
                ok, r, payload = False, None, str(e).encode()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            dt = time.time() - t0
            with lock:
                if t0 >= warm_end:
                    lat.append(dt)
                if not ok:
                    errors.append((getattr(r, "status", None), payload[:200]))

    def sampler():
        while time.time() < warm_end:
            time.sleep(0.2)
        rss["start"] = rss_mb(a.pid)
        peak = rss["start"]
        while time.time() < end:
            time.sleep(0.5)
            peak = max(peak, rss_mb(a.pid))
        rss["end"], rss["peak"] = rss_mb(a.pid), peak

    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    n = len(lat)
    pct = lambda q: lat[min(n - 1, int(q * n))] * 1000 if n else float("nan")
    growth = rss["end"] - rss["start"]
    print(f"clients {a.clients}, {a.seconds:.0f} s after {a.warmup:.0f} s warm-up, loopback")
    print(f"requests {n}, {n / a.seconds:.1f} req/s, p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms, errors {len(errors)}")
    print(f"server RSS after warm-up {rss['start']:.1f} MB, end {rss['end']:.1f} MB, peak {rss['peak']:.1f} MB, growth {growth:+.1f} MB (bound {a.rss_bound_mb:.0f} MB)")
    for e in errors[:5]:
        print("error:", e)
    ok = not errors and growth <= a.rss_bound_mb and n > 0
    print("load test:", "PASS" if ok else "FAIL")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
