#!/usr/bin/env python3
"""Hostile clients against `artemis serve` (standard library only, loopback only, bounded).

Run against a server started with short limits (scripts/load-test starts one with
--timeout 5 --header-timeout 3 --shutdown-grace 3). Checks, each bounded in count and time:

1. multipart bodies with a part after `file` (1 MB x 3, 230 bytes x 5): every answer arrives
   whole (as many body bytes as its content-length), none is cut by a reset;
2. half-sent headers: the server closes the connection within the header timeout (+2 s);
3. a 1 MB body sent at 1 kB/s: answered 408 within the request timeout (+2 s);
4. SIGTERM with a slow upload connected: the process ends within the grace period (+3 s).

Prints one line per check and exits 1 if any fails.
"""
import argparse, os, signal, socket, time, urllib.parse


def recv_all(sock, limit):
    sock.settimeout(limit)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, ConnectionResetError) as e:
        return got, type(e).__name__
    return got, None


def multipart(image, extra):
    b = "slowclients"
    with open(image, "rb") as f:
        data = f.read()
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.jpg\"\r\n\r\n").encode() + data
    body += (f"\r\n--{b}\r\nContent-Disposition: form-data; name=\"extra\"; filename=\"x.bin\"\r\n\r\n").encode()
    body += bytes(i % 251 for i in range(extra)) + f"\r\n--{b}--\r\n".encode()
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def check_multipart(host, port, image):
    for extra, times in ((1 << 20, 3), (230, 5)):
        for _ in range(times):
            s = socket.create_connection((host, port), timeout=30)
            s.sendall(multipart(image, extra))
            got, err = recv_all(s, 30)
            s.close()
            head, _, body = got.partition(b"\r\n\r\n")
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n")
                           if l.lower().startswith(b"content-length:")), -1)
            if err or len(body) != length:
                return f"FAIL: extra part of {extra} B: {len(body)} of {length} body bytes ({err})"
    return "ok: 8 multipart bodies with a part after `file`, every answer whole"


def check_half_headers(host, port, header_timeout):
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: t\r\n")
    t0 = time.time()
    recv_all(s, header_timeout + 5)
    held = time.time() - t0
    s.close()
    ok = held <= header_timeout + 2
    return f"{'ok' if ok else 'FAIL'}: half-sent headers closed after {held:.1f} s (limit {header_timeout} s)"


def slow_upload(host, port):
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
              + f"Content-Length: {1 << 20}\r\n\r\n".encode())
    return s


def check_slow_body(host, port, timeout):
    s = slow_upload(host, port)
    s.settimeout(0.05)
    t0, answer = time.time(), b""
    while time.time() - t0 < timeout + 10:
        try:
            s.sendall(b"\xff" * 1024)
        except OSError:
            break
        try:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        except socket.timeout:
            pass
        except OSError:
            break
        time.sleep(0.95)
    held = time.time() - t0
    s.close()
    ok = held <= timeout + 2 and answer.startswith(b"HTTP/1.1 408")
    return f"{'ok' if ok else 'FAIL'}: 1 kB/s body held {held:.1f} s (limit {timeout} s), answer {answer[:12]!r}"


def check_sigterm(host, port, pid, grace):
    s = slow_upload(host, port)
    s.sendall(b"\0" * 1024)
    time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    t0 = time.time()
    while time.time() - t0 < grace + 10 and os.path.exists(f"/proc/{pid}"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    ended = time.time() - t0
    s.close()
    ok = ended <= grace + 3
    return f"{'ok' if ok else 'FAIL'}: SIGTERM with a slow upload connected: ended after {ended:.1f} s (grace {grace} s)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--header-timeout", type=float, default=3)
    ap.add_argument("--grace", type=float, default=3)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    lines = [
        check_multipart(u.hostname, u.port, a.image),
        check_half_headers(u.hostname, u.port, a.header_timeout),
        check_slow_body(u.hostname, u.port, a.timeout),
        check_sigterm(u.hostname, u.port, a.pid, a.grace),
    ]
    for l in lines:
        print(f"slow clients: {l}")
    raise SystemExit(1 if any(l.startswith("FAIL") for l in lines) else 0)


if __name__ == "__main__":
    main()
