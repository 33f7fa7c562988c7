"""Progress into TrainJob.status.trainerStatus (issue 10, item 5), through the real trainer.

With Trainer v2's ``TrainJobStatus`` feature gate on, Trainer's trainjobstatus plugin injects
``KUBEFLOW_TRAINER_SERVER_URL``, ``KUBEFLOW_TRAINER_SERVER_TOKEN`` and ``_CA_CERT`` into the trainer
container (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/trainjobstatus/trainjobstatus.go),
and transformers (>= 4.57; the image has 5.6) then adds its ``KubeflowCallback`` to every HF Trainer,
which POSTs ``{"trainerStatus": ...}`` to
``/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status`` (pkg/statusserver/server.go).  This runs
``python -m kubetune.trainer`` with exactly Trainer v2's environment (only PET_* for the topology, plus those variables)
against a loopback server in place of Trainer's status server, and checks that LLaMA-Factory's training reports there,
in the v2.3 schema. Without the variables (the gate off, or PyTorchJob) nothing is sent and kubetune's own status is
unaffected (the progress lines are printed either way).
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.kt_upstream import require_upstream_crds
from kubetune.trainer.tiny import tiny_job
from tests.support.trainerlib import TinyAssets, free_port, make_pod, progress_lines, run_trainer

pytestmark = [pytest.mark.slow, pytest.mark.train]

TRAINJOB_CRD = "trainer/trainer.kubeflow.org_trainjobs.yaml"
STATUS_PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs/ft/status"


class StatusServer(http.server.ThreadingHTTPServer):
    received: list[tuple[str, str, dict[str, Any]]]


class Handler(http.server.BaseHTTPRequestHandler):
    server: StatusServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((self.path, self.headers.get("Authorization", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def trainer_status_schema() -> dict[str, Any]:
    crd = yaml.load(
        require_upstream_crds(TRAINJOB_CRD).read_text(encoding="utf-8"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["trainerStatus"]
    return schema


def test_llamafactory_training_reports_to_trainers_status_server(tmp_path: Path, tiny_assets: TinyAssets) -> None:
    import jsonschema

    server = StatusServer(("127.0.0.1", 0), Handler)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("projected-token\n", encoding="utf-8")
    try:
        pod = make_pod(tmp_path, tiny_job("ft", tiny_assets, method="full", max_steps=6), tiny_assets)
        env = {k: v for k, v in pod.env.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")}
        env.update(
            PET_NNODES="1",
            PET_NPROC_PER_NODE="1",
            PET_NODE_RANK="0",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(free_port()),
            KUBEFLOW_TRAINER_SERVER_URL=f"http://127.0.0.1:{server.server_address[1]}{STATUS_PATH}",
            KUBEFLOW_TRAINER_SERVER_TOKEN=str(token),
        )
        result = run_trainer(env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert progress_lines(result.stdout)[-1]["step"] == 6, "kubetune's own progress is unaffected"
    assert server.received, "nothing reached the status server"
    assert {(path, auth) for path, auth, _ in server.received} == {(STATUS_PATH, "Bearer projected-token")}
    statuses = [body["trainerStatus"] for _, _, body in server.received]
    assert statuses[0]["progressPercentage"] == 0 and statuses[-1]["progressPercentage"] == 100
    assert any(m["name"] == "loss" for m in statuses[-1].get("metrics") or [])
    # Last, the upstream schema of what was posted: without the upstream CRDs this skips here (the
    # training and the report were checked above), so the missing part is reported, not passed.
    schema = trainer_status_schema()
    for status in statuses:
        jsonschema.validate(status, schema)
