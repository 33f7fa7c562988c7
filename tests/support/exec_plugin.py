"""A kubeconfig exec credential plugin for the tests, like aws-iam-authenticator or gke-gcloud-auth-plugin.

Each run prints an ExecCredential (the apiVersion kubectl asked for in
KUBERNETES_EXEC_INFO: client.authentication.k8s.io/v1 or v1beta1) with a new
token that expires KT_TOKEN_TTL seconds from now (now: moved forward by the
offset in the file KT_CLOCK_OFFSET names, when set), and logs the token with its
expiry in KT_ISSUED (JSON lines) so the emulated API server's authenticator
(emulator.Tokens) knows it.  With KT_CLIENT_CERT set it returns a client
certificate and key instead of a token; with KT_CLIENT_CERT_DIR set, the n-th run returns the
certificate and key DIR/user-n.crt and DIR/user-n.key (a plugin that issues a new certificate each
run; runs counted in DIR/runs).  With KT_FIXED_TOKEN set it hands out that token on every run
(a plugin that caches its token until it expires), still logged in KT_ISSUED.  With KT_HANG set, each run
appends a line (its pid) to KT_HANG + ".runs" and then waits while the file KT_HANG exists (a plugin that
hangs).  With KT_EXEC_INFO_DUMP set it writes the KUBERNETES_EXEC_INFO it got to that file; with KT_PROMPT set
it writes that line to its stderr first (a login prompt: kubelogin's device code); with KT_ALSO_TOKEN set
beside KT_CLIENT_CERT it answers a token too.  With KT_FAIL set, each run appends a line to KT_FAIL + ".runs"
and, while the file KT_FAIL exists, exits 1 with an error on stderr (its identity provider down).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import uuid


def main() -> int:
    if os.environ.get("KT_EXEC_INFO_DUMP"):
        with open(os.environ["KT_EXEC_INFO_DUMP"], "w", encoding="utf-8") as dump:
            dump.write(os.environ.get("KUBERNETES_EXEC_INFO", ""))
    if os.environ.get("KT_PROMPT"):
        sys.stderr.write(os.environ["KT_PROMPT"] + "\n")
        sys.stderr.flush()
    fail = os.environ.get("KT_FAIL")
    if fail:
        with open(fail + ".runs", "a", encoding="utf-8") as runs:
            runs.write("run\n")
        if os.path.exists(fail):
            sys.stderr.write("error: the identity provider is unreachable\n")
            return 1
    hang = os.environ.get("KT_HANG")
    if hang:
        with open(hang + ".runs", "a", encoding="utf-8") as runs:
            runs.write(f"run {os.getpid()}\n")
        deadline = time.monotonic() + 120  # never outlives a test run
        while os.path.exists(hang) and time.monotonic() < deadline:
            time.sleep(0.05)
    info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO", "{}"))
    api_version = info.get("apiVersion", "client.authentication.k8s.io/v1")
    ttl = float(os.environ.get("KT_TOKEN_TTL", "3"))
    # The test's clock (kt_time.ForwardClock): the issuer shares the cluster's clock, which the test moves.
    offset = (
        float(open(os.environ["KT_CLOCK_OFFSET"], encoding="utf-8").read())
        if os.environ.get("KT_CLOCK_OFFSET")
        else 0.0
    )
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl + offset)
    status: dict[str, str] = {"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if os.environ.get("KT_CLIENT_CERT_DIR"):
        folder = os.environ["KT_CLIENT_CERT_DIR"]
        runs = os.path.join(folder, "runs")
        n = int(open(runs, encoding="utf-8").read()) + 1 if os.path.exists(runs) else 1
        with open(runs, "w", encoding="utf-8") as f:
            f.write(str(n))
        for key, suffix in (("clientCertificateData", "crt"), ("clientKeyData", "key")):
            status[key] = open(os.path.join(folder, f"user-{n}.{suffix}"), encoding="utf-8").read()
    elif os.environ.get("KT_CLIENT_CERT"):
        status["clientCertificateData"] = os.environ["KT_CLIENT_CERT"]
        status["clientKeyData"] = os.environ["KT_CLIENT_KEY"]
        if os.environ.get("KT_ALSO_TOKEN"):
            status["token"] = os.environ["KT_ALSO_TOKEN"]
    else:
        token = os.environ.get("KT_FIXED_TOKEN") or f"kt-{uuid.uuid4().hex}"
        status["token"] = token
        with open(os.environ["KT_ISSUED"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"token": token, "expires": expires.timestamp()}) + "\n")
    json.dump({"apiVersion": api_version, "kind": "ExecCredential", "status": status}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
