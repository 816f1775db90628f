"""Approval on one replica -> the held statement runs on another: latency.

Used by bench/replicas.sh. For each round: alice's UPDATE is held by replica A
(`on_missing_grant = "hold"` files the request), bob approves it through
replica B's API, and the time from sending the approval to the UPDATE's return is
recorded; then alice gives the grant up. Run once with B != A
(across replicas) and once with B == A (one process), in the same run.

    python3 bench/replicas.py PORT0 API0 PORT1 API1 ROUNDS
"""

import json
import sys
import threading
import time
import urllib.request

import psycopg


def call(api, method, path, token=None, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{api}{path}",
        method=method,
        data=json.dumps(body or {}).encode() if method == "POST" else None,
        headers={"content-type": "application/json"},
    )
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def login(api, user):
    return call(api, "POST", "/api/v1/login", body={"user": user, "password": "benchpw"})["token"]


def rounds(port_a, api_a, api_b, n):
    alice_a, bob_b = login(api_a, "postgres"), login(api_b, "lead")
    conn = psycopg.connect(
        host="127.0.0.1", port=port_a, user="postgres", password="benchpw",
        dbname="bench", autocommit=True,
        # Never a named prepared statement: a Bind of one prepared under an
        # earlier grant is PostgreSQL's to refuse, and is not held.
        prepare_threshold=None,
    )
    conn.execute("SET jitgate.reason = 'bench'")
    out = []
    for _ in range(n):
        done = {}

        def held():
            conn.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
            done["at"] = time.monotonic()

        t = threading.Thread(target=held)
        t.start()
        rid = None
        while rid is None:
            pending = call(api_b, "GET", "/api/v1/requests?state=pending", bob_b)["requests"]
            rid = pending[0]["id"] if pending else None
            if rid is None:
                time.sleep(0.002)
        # From the moment the approval is sent: its commit, the NOTIFY, the
        # enforcer's GRANT and the held statement's run are all inside.
        approved = time.monotonic()
        call(api_b, "POST", f"/api/v1/requests/{rid}/approve", bob_b, {"comment": ""})
        t.join(10)
        assert "at" in done, "the held statement never ran"
        out.append((done["at"] - approved) * 1000)
        for g in call(api_a, "GET", "/api/v1/grants?active=true", alice_a)["grants"]:
            call(api_a, "POST", f"/api/v1/grants/{g['id']}/relinquish", alice_a)
        time.sleep(0.3)
    conn.close()
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def enforcer(api):
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/healthz", timeout=5) as r:
        return json.loads(r.read())["enforcer"]


if __name__ == "__main__":
    port0, api0, port1, api1, n = (int(x) for x in sys.argv[1:6])
    cases = (
        ("the same replica", port0, api0, api0),
        ("another replica", port0, api0, api1),
        ("another replica", port1, api1, api0),
    )
    for where, port_a, api_a, api_b in cases:
        role = "the enforcer" if enforcer(api_a) else "not the enforcer"
        ms = rounds(port_a, api_a, api_b, n)
        print(
            f"| approved on {where}; statement on a replica that is {role} | {n} | "
            f"{pct(ms, 50):.1f} | {pct(ms, 99):.1f} | {max(ms):.1f} |"
        )
