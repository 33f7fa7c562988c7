"""The chart's monitoring extras: the training pods' PodMonitor and the Grafana dashboard ConfigMap.

The dashboard is checked against what is really exported: the trainer's names come from
``TrainerMetrics.exposition()`` and the operator's from its real prometheus_client registry,
both parsed with prometheus_client's text parser."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune.api import FineTuneJob, Progress, contract, load_documents
from kubetune.controller.metrics import Metrics
from kubetune.render import render
from kubetune.trainer.metrics import METRICS, TrainerMetrics

from tests.support.chartlib import CHART, ROOT, find, needs_helm, one, template

DASHBOARD = CHART / "files" / "dashboards" / "kubetune.json"
METRIC = re.compile(r"\b(kubetune_[a-z0-9_]+)\b")


def _names(text: str) -> set[str]:
    out: set[str] = set()
    for family in text_string_to_metric_families(text):
        out.add(family.name)
        out.update(s.name for s in family.samples)
        if family.type == "counter":
            out.add(family.name + "_total")
        if family.type == "histogram":
            out.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return out


def exported() -> set[str]:
    trainer = TrainerMetrics(
        "j", "ns", samples_per_step=4, parameters=10**6, peak_flops=1e12, clock=iter([0.0, 1.0]).__next__
    )
    progress = Progress(step=1, total_steps=9, percent=11.1, epoch=0.1, loss=1.0, learning_rate=1e-4, eta_seconds=5)
    trainer.observe({"current_steps": 1, "total_tokens": 10, "vram_allocated": 1.0}, progress)
    trainer.observe({"current_steps": 2, "total_tokens": 30, "vram_allocated": 1.0}, progress)
    operator = Metrics()
    operator.watch_phases(lambda: {"Running": 1})
    names = _names(trainer.exposition()) | _names(generate_latest(operator.registry).decode())
    assert {f"kubetune_trainer_{m}" for m in METRICS} <= names  # every trainer metric was really produced above
    return names


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def test_dashboard_is_valid_json_and_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = exported()
    used: set[str] = set()
    for expr in _queries(dashboard):
        found = set(METRIC.findall(expr))
        assert found, f"query names no kubetune metric: {expr}"
        assert found <= names, f"{expr} names {sorted(found - names)}, which nothing exports"
        used |= found
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    # What the issue asks the dashboard to show, per job, plus the operator's own health.
    wanted = {
        f"kubetune_trainer_{m}"
        for m in (
            "step",
            "loss",
            "learning_rate",
            "tokens_per_second",
            "samples_per_second",
            "peak_gpu_memory_bytes",
            "mfu_ratio",
            "epoch",
            "eta_seconds",
        )
    }
    wanted |= {
        "kubetune_finetunejobs",
        "kubetune_reconcile_seconds_bucket",
        "kubetune_api_requests_total",
        "kubetune_reconcile_errors_total",
    }
    assert wanted <= used, sorted(wanted - used)
    per_job = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "kubetune_trainer_" in t["expr"]]
    assert all('finetunejob=~"$finetunejob"' in e for e in per_job)


@needs_helm
def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    objects = template(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=ML",
    )
    cm = next(o for o in find(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(cm["data"]["kubetune.json"]) == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    kubernetes_validate.validate(cm, kubernetes_validate.latest_version(), strict=True)
    off = template()
    assert not [o for o in find(off, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert not find(off, "PodMonitor")


@needs_helm
@pytest.mark.parametrize("namespaces", [[], ["team-a", "team-b"]], ids=["all-namespaces", "watched"])
def test_trainer_podmonitor_scrapes_the_port_rank_0_declares(namespaces: list[str]) -> None:
    extra = [
        "--set",
        "metrics.trainerPodMonitor.enabled=true",
        "--set",
        "metrics.trainerPodMonitor.labels.release=prom",
    ]
    if namespaces:
        extra += ["--set", "watchNamespaces={" + ",".join(namespaces) + "}"]
    pm = one(template(*extra), "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["metadata"]["labels"]["release"] == "prom"
    assert pm["spec"]["selector"] == {"matchExpressions": [{"key": contract.LABEL_JOB, "operator": "Exists"}]}
    assert pm["spec"]["namespaceSelector"] == ({"matchNames": namespaces} if namespaces else {"any": True})
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    # The rendered training pod: only the PyTorchJob Master (global rank 0) declares that port,
    # and carries the job label.
    job = FineTuneJob.from_api(
        next(iter(load_documents((ROOT / "examples" / "finetune-full.yaml").read_text(encoding="utf-8"))))
    )
    workload = render(job).workload
    specs = workload["spec"]["pytorchReplicaSpecs"]
    master_ports = {
        p["name"]: p["containerPort"] for p in specs["Master"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert master_ports[endpoint["port"]] == contract.METRICS_PORT
    assert endpoint["port"] not in {p["name"] for p in specs["Worker"]["template"]["spec"]["containers"][0]["ports"]}
    assert contract.LABEL_JOB in specs["Master"]["template"]["metadata"]["labels"]
    env = {e["name"]: e.get("value") for e in specs["Master"]["template"]["spec"]["containers"][0]["env"]}
    assert env[contract.ENV_METRICS_PORT] == str(contract.METRICS_PORT)


def _prometheus_label(name: str) -> str:
    """kubernetes_sd's pod label meta name: characters other than [a-zA-Z0-9_] become '_' (Prometheus docs;
    the kubernetes_sd source was not read here)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _kept(relabelings: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """Prometheus' keep/drop relabeling: the source labels' values joined by ';' (default separator),
    matched against the fully anchored regex (relabel_config docs, via the docs search index)."""
    meta = {_prometheus_label(k): v for k, v in labels.items()}
    for rule in relabelings:
        value = rule.get("separator", ";").join(meta.get(s, "") for s in rule["sourceLabels"])
        matched = re.fullmatch(rule.get("regex", "(.*)"), value) is not None
        if (rule["action"] == "drop" and matched) or (rule["action"] == "keep" and not matched):
            return False
    return True


@needs_helm
def test_the_trainer_podmonitor_targets_only_rank_0_of_a_trainjob() -> None:
    """A TrainJob's node pods share one template, so every one declares the port `metrics`; only node
    rank 0 serves it: the other N-1 must be no target at all (they would be always down)."""
    monitor = one(template("--set", "metrics.trainerPodMonitor.enabled=true"), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabelings = endpoint.get("relabelings") or []
    node = {"kubetune.io/finetunejob": "j", "jobset.sigs.k8s.io/jobset-name": "j", "jobset.sigs.k8s.io/job-index": "0"}
    assert _kept(relabelings, {**node, "batch.kubernetes.io/job-completion-index": "0"})
    for index in ("1", "7", "10"):
        assert not _kept(relabelings, {**node, "batch.kubernetes.io/job-completion-index": index})
    # PyTorchJob's master and MPIJob's worker 0 (the only pods declaring the port there) stay targets
    assert _kept(relabelings, {"kubetune.io/finetunejob": "j", "training.kubeflow.org/replica-type": "master"})
    assert _kept(
        relabelings,
        {
            "kubetune.io/finetunejob": "j",
            "training.kubeflow.org/replica-type": "worker",
            "training.kubeflow.org/replica-index": "0",
        },
    )
