"""Measures how the API copes with oversized request bodies: the figures of docs/reliability.md.

Starts ``livt serve --no-worker`` on a temporary data directory and sends ``POST /jobs`` bodies of
many keys (``--keys`` 3 000 000: 51 MB) without a token, with one, and chunked, and a spec whose
``data.mean`` holds ``--items`` bad list items, while a thread polls ``/healthz``. For each case
it prints the answer, the time to it and its size, how much of the body had been sent by then,
the slowest ``/healthz`` answer meanwhile and the server's peak memory (VmHWM). Run from the
repository root:

    python -m scripts.probe_request_limits --keys 3000000

The server is stopped at the end; nothing outside the temporary directory is touched.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.live_server import LiveServer
from tests.raw_http import HealthWatch, many_keys_body, send_request


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keys", type=int, default=3_000_000, help="keys of the unauthenticated body"
    )
    parser.add_argument(
        "--auth-keys",
        type=int,
        default=None,
        help="keys of the authenticated bodies (default: --keys)",
    )
    parser.add_argument(
        "--items", type=int, default=150_000, help="bad list items of the 'items' case"
    )
    parser.add_argument("--cases", default="unauth,auth,chunked,items,normal")
    args = parser.parse_args()
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp, LiveServer.start(Path(tmp), worker=False) as server:
        token = server.create_token("probe")
        auth = {"Authorization": f"Bearer {token}"}
        print(
            f"server pid {server.process.pid}, base memory {_peak_rss_mb(server.process.pid):.0f} MB"
        )
        auth_keys = args.auth_keys or args.keys
        plan: list[tuple[str, bytes, str, dict[str, str], bool]] = []
        if "unauth" in cases:
            body = many_keys_body(args.keys)
            plan.append(("no token, Content-Length", body, f"{args.keys:,} keys", {}, False))
        if "auth" in cases or "chunked" in cases:
            body = many_keys_body(auth_keys)
            if "auth" in cases:
                plan.append(("token, Content-Length", body, f"{auth_keys:,} keys", auth, False))
            if "chunked" in cases:
                plan.append(("token, chunked", body, f"{auth_keys:,} keys", auth, True))
        if "items" in cases:
            spec = {"kind": "pretrain", "preset": "fashion-mnist-lt", "data": {"mean": []}}
            spec["data"]["mean"] = [[]] * args.items
            body = json.dumps(spec).encode()
            plan.append(("token, bad list items", body, f"{args.items:,} items", auth, False))
        print(
            "| request | body | answer | time to answer | answer size | body the client had "
            "sent by then | worst /healthz | server peak memory |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, body, what, headers, chunked in plan:
            with HealthWatch(server.url) as watch:
                response = send_request(
                    server.url, "POST", "/jobs", body, headers=headers, chunked=chunked
                )
                time.sleep(0.5)  # and a little after the answer
            print(
                f"| {label} | {len(body) / 1e6:.1f} MB, {what} | {response.status} | "
                f"{response.seconds:.2f} s | {len(response.body):,} B | "
                f"{response.sent / 1e6:.2f} MB | "
                f"{watch.worst:.3f} s ({len(watch.latencies)} polls) | "
                f"{_peak_rss_mb(server.process.pid):.0f} MB |"
            )
        if "normal" in cases:
            spec = {"kind": "pretrain", "preset": "fashion-mnist-lt", "epochs": 1}
            response = send_request(
                server.url, "POST", "/jobs", json.dumps(spec).encode(), headers=auth
            )
            print(
                f"| normal job spec | {len(json.dumps(spec))} B | {response.status} | "
                f"{response.seconds:.3f} s | {len(response.body):,} B | all | - | - |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
