"""Table-driven tests of the two workload backends and of what every pod shares."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.contract import CONFIG_DIR, KUEUE_QUEUE_LABEL, LABEL_JOB, Layout
from kubetune.render import RenderOptions, render
from kubetune.cluster.backends import BACKENDS, get_backend
from tests.support.renderlib import JobBuilder, pod_templates


def _main_container(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- PyTorchJob topology ---------------------------------------------------------------

TOPOLOGY = [
    # id, nodes, gpus, expected replicas, nprocPerNode, GPU limit
    ("1x1", 1, 1, {"Master": 1}, "1", 1),
    ("1x8", 1, 8, {"Master": 1}, "8", 8),
    ("4x8", 4, 8, {"Master": 1, "Worker": 3}, "8", 8),
    ("2x0-cpu", 2, 0, {"Master": 1, "Worker": 1}, "1", None),
]


@pytest.mark.parametrize(
    ("nodes", "gpus", "replicas", "nproc", "gpu_limit"), [t[1:] for t in TOPOLOGY], ids=[t[0] for t in TOPOLOGY]
)
def test_pytorchjob_topology(
    nodes: int, gpus: int, replicas: dict[str, int], nproc: str, gpu_limit: int | None
) -> None:
    b = JobBuilder().set("spec.resources", {"nodes": nodes, "gpusPerNode": gpus})
    if gpus == 0:
        b.set("spec.training", {"precision": "fp32"})
    w = render(b.build()).workload
    assert (w["apiVersion"], w["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    specs = w["spec"]["pytorchReplicaSpecs"]
    assert {role: s["replicas"] for role, s in specs.items()} == replicas
    assert w["spec"]["nprocPerNode"] == nproc
    assert all(s["restartPolicy"] == "ExitCode" for s in specs.values())
    for template in pod_templates(w).values():
        c = _main_container(template)
        assert c["name"] == "pytorch"
        assert c["command"] == ["python", "-m", "kubetune.trainer"]
        assert c["resources"].get("limits", {}).get("nvidia.com/gpu") == gpu_limit
        assert _env(c)["NPROC_PER_NODE"] == nproc
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in c["ports"]


# --- MPIJob ------------------------------------------------------------------------------

MPI = [
    ("1x1", 1, 1, "1"),
    ("4x8", 4, 8, "32"),
]


@pytest.mark.parametrize(("nodes", "gpus", "np"), [m[1:] for m in MPI], ids=[m[0] for m in MPI])
def test_mpijob_launcher_and_workers(nodes: int, gpus: int, np: str) -> None:
    job = (
        JobBuilder()
        .set("spec.resources", {"nodes": nodes, "gpusPerNode": gpus})
        .set("spec.distributed", {"backend": "mpijob"})
        .build()
    )
    rendered = render(job)
    w = rendered.workload
    assert (w["apiVersion"], w["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    assert w["spec"]["slotsPerWorker"] == gpus
    assert w["spec"]["mpiImplementation"] == "OpenMPI"
    assert w["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"
    specs = w["spec"]["mpiReplicaSpecs"]
    assert specs["Launcher"]["replicas"] == 1 and specs["Worker"]["replicas"] == nodes
    launcher = _main_container(specs["Launcher"]["template"])
    worker = _main_container(specs["Worker"]["template"])
    argv = launcher["command"]
    assert argv[:6] == ["python", "-m", "kubetune.trainer.mpilaunch", "mpirun", "-np", np]
    # The hostfile is mpi-operator's (OMPI_MCA_orte_default_hostfile); the wrapper names it.
    assert "--hostfile" not in argv
    assert argv[-3:] == ["python", "-m", "kubetune.trainer"]
    forwarded = {argv[i + 1] for i, a in enumerate(argv) if a == "-x"}
    assert {"KUBETUNE_CONFIG_DIR", "KUBETUNE_OUTPUT_DIR", "NPROC_PER_NODE", "HF_HOME"} <= forwarded
    assert "nvidia.com/gpu" not in str(launcher["resources"]), "the launcher only runs mpirun: no GPU"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == gpus
    # sshd under kubetune's PID 1, which keeps it up on SIGTERM until the ranks' stop checkpoint is saved.
    assert worker["command"][:3] == ["python", "-m", "kubetune.trainer.mpiworker"] and worker["command"][3].endswith(
        "sshd"
    )
    # DeepSpeed is implied by the MPIJob backend.
    assert rendered.train_args["deepspeed"] == f"{CONFIG_DIR}/ds_config.json"
    assert "ds_config.json" in rendered.files


def test_mpijob_forwards_user_env_without_putting_names_on_the_command_line() -> None:
    job = (
        JobBuilder()
        .set("spec.distributed", {"backend": "mpijob"})
        .set(
            "spec.env",
            [
                {"name": "WANDB_PROJECT", "value": "p"},
                {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "w", "key": "k"}}},
            ],
        )
        .build()
    )
    launcher = _main_container(render(job).workload["spec"]["mpiReplicaSpecs"]["Launcher"]["template"])
    assert "WANDB_PROJECT" not in launcher["command"]
    assert _env(launcher)["OMPI_MCA_mca_base_env_list"] == "WANDB_API_KEY;WANDB_PROJECT"
    assert _env(launcher)["WANDB_API_KEY"] == {"secretKeyRef": {"name": "w", "key": "k"}}


def test_backend_option_overrides_spec() -> None:
    job = JobBuilder().build()
    assert render(job, RenderOptions(backend="mpijob")).workload["kind"] == "MPIJob"
    assert (
        render(
            JobBuilder().set("spec.distributed", {"backend": "mpijob"}).build(), RenderOptions(backend="pytorchjob")
        ).workload["kind"]
        == "PyTorchJob"
    )


def test_backend_option_that_contradicts_the_launcher_is_refused() -> None:
    job = JobBuilder().set("spec.distributed", {"launcher": "accelerate"}).build()
    with pytest.raises(ValueError, match="launcher"):
        render(job, RenderOptions(backend="mpijob"))


def test_registry() -> None:
    assert set(BACKENDS) == {"pytorchjob", "mpijob", "trainjob"}
    with pytest.raises(ValueError, match="known: mpijob, pytorchjob, trainjob"):
        get_backend("jaxjob")
    assert get_backend("auto").name == "pytorchjob", "auto renders as pytorchjob without a cluster"


# --- suspend, Kueue, run policy, ownership -------------------------------------------------

SUSPEND = [
    # id, spec.suspend, spec queue, option default queue, expected runPolicy.suspend (None =
    # absent), expected queue label
    ("running", False, None, None, False, None),
    ("suspended", True, None, None, True, None),
    ("queued-spec", False, "gpu-queue", None, None, "gpu-queue"),
    ("queued-suspended", True, "gpu-queue", None, None, "gpu-queue"),
    ("queued-default", False, None, "default-q", None, "default-q"),
    ("spec-queue-wins", False, "mine", "default-q", None, "mine"),
]


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob"])
@pytest.mark.parametrize(
    ("suspend", "queue", "default_queue", "expected", "label"), [s[1:] for s in SUSPEND], ids=[s[0] for s in SUSPEND]
)
def test_kueue_owns_suspend(
    backend: str, suspend: bool, queue: str | None, default_queue: str | None, expected: bool | None, label: str | None
) -> None:
    b = JobBuilder().set("spec.suspend", suspend).set("spec.distributed", {"backend": backend})
    if queue:
        b.set("spec.scheduling", {"queueName": queue})
    w = render(b.build(), RenderOptions(default_queue=default_queue)).workload
    assert w["spec"]["runPolicy"].get("suspend") == expected
    assert w["metadata"]["labels"].get(KUEUE_QUEUE_LABEL) == label


def test_run_policy() -> None:
    job = (
        JobBuilder()
        .set("spec.runPolicy", {"backoffLimit": 7, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60})
        .set("spec.scheduling", {"priorityClassName": "high"})
        .set("spec.resources", {"nodes": 3})
        .build()
    )
    rp = render(job).workload["spec"]["runPolicy"]
    assert rp["backoffLimit"] == 7 and rp["activeDeadlineSeconds"] == 3600 and rp["ttlSecondsAfterFinished"] == 60
    assert rp["schedulingPolicy"] == {"minAvailable": 3, "priorityClass": "high"}


@pytest.mark.parametrize("uid", [None, "1234-abcd"], ids=["no-uid", "uid"])
def test_owner_references(uid: str | None) -> None:
    b = JobBuilder()
    if uid:
        b.set("metadata.uid", uid)
    rendered = render(b.build())
    for obj in rendered.objects:
        refs = obj["metadata"].get("ownerReferences")
        if uid is None:
            assert refs is None
        else:
            assert refs == [
                {
                    "apiVersion": "kubetune.io/v1alpha1",
                    "kind": "FineTuneJob",
                    "name": "demo",
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]


# --- pod contents --------------------------------------------------------------------------


def test_names_labels_namespace() -> None:
    rendered = render(JobBuilder().build())
    cm, w = rendered.config_map, rendered.workload
    assert cm["metadata"]["name"] == "demo-kubetune" and w["metadata"]["name"] == "demo"
    assert cm["metadata"]["namespace"] == w["metadata"]["namespace"] == "team-a"
    for labels in (cm["metadata"]["labels"], w["metadata"]["labels"], pod_templates(w)["Master"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/name"] == "kubetune"
        assert labels["app.kubernetes.io/managed-by"] == "kubetune"
        assert labels[LABEL_JOB] == "demo"
    no_ns = JobBuilder().set("metadata", {"name": "demo"}).build()
    assert render(no_ns, RenderOptions(default_namespace="ml")).workload["metadata"]["namespace"] == "ml"


def test_restricted_security_and_no_api_token() -> None:
    template = pod_templates(render(JobBuilder().build()).workload)["Master"]
    spec = template["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _main_container(template)["securityContext"]
    assert (
        sc["allowPrivilegeEscalation"] is False
        and sc["capabilities"] == {"drop": ["ALL"]}
        and sc["readOnlyRootFilesystem"] is True
    )


def test_volumes_and_mounts() -> None:
    job = (
        JobBuilder()
        .set(
            "spec.storage",
            {"outputs": {"claimName": "out", "subPath": "runs"}, "datasets": {"claimName": "data", "readOnly": True}},
        )
        .set("spec.resources", {"sharedMemorySize": "8Gi"})
        .build()
    )
    template = pod_templates(render(job).workload)["Master"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    mounts = {m["name"]: m for m in _main_container(template)["volumeMounts"]}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "demo-kubetune"}}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/kubetune", "readOnly": True}
    assert volumes["outputs"]["persistentVolumeClaim"]["claimName"] == "out"
    assert mounts["outputs"] == {"name": "outputs", "mountPath": "/data/outputs", "subPath": "runs"}
    assert volumes["datasets"]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}
    assert mounts["datasets"]["readOnly"] is True
    assert volumes["models"] == {"name": "models", "emptyDir": {}}, "unset models volume: an emptyDir"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["scratch"]["mountPath"] == "/tmp/kubetune"


def test_environment_and_secrets_by_reference() -> None:
    job = (
        JobBuilder()
        .set("spec.hfTokenSecretRef", {"name": "hf", "key": "tok"})
        .set("spec.env", [{"name": "WANDB_PROJECT", "value": "x"}])
        .build()
    )
    env = _env(_main_container(pod_templates(render(job).workload)["Master"]))
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "tok"}}
    assert env["KUBETUNE_OUTPUT_DIR"] == "/data/outputs/team-a/demo"
    assert env["KUBETUNE_CONFIG_DIR"] == "/etc/kubetune"
    assert env["HF_HOME"].startswith("/data/models/")
    assert "HF_HUB_OFFLINE" not in env
    assert env["WANDB_PROJECT"] == "x"


def test_hub_token_only_when_referenced_and_optional_passes_through() -> None:
    """The Hub answers an invalid token with 401 even for public models: no HF_TOKEN unless
    spec.hfTokenSecretRef is set, and optional: true reaches the pod, which then starts without it."""
    plain = _env(_main_container(pod_templates(render(JobBuilder().build()).workload)["Master"]))
    assert "HF_TOKEN" not in plain
    job = JobBuilder().set("spec.hfTokenSecretRef", {"name": "hf-token", "optional": True}).build()
    env = _env(_main_container(pod_templates(render(job).workload)["Master"]))
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}


def test_resources_requests_equal_limits() -> None:
    job = (
        JobBuilder()
        .set("spec.resources", {"gpusPerNode": 2, "cpu": "8", "memory": "64Gi", "gpuResourceName": "amd.com/gpu"})
        .build()
    )
    res = _main_container(pod_templates(render(job).workload)["Master"])["resources"]
    assert res == {
        "limits": {"cpu": "8", "memory": "64Gi", "amd.com/gpu": 2},
        "requests": {"cpu": "8", "memory": "64Gi"},
    }


def test_scheduling_fields_reach_every_pod() -> None:
    job = (
        JobBuilder()
        .set("spec.resources", {"nodes": 2})
        .set(
            "spec.scheduling",
            {
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "priorityClassName": "p",
            },
        )
        .set("spec.imagePullSecrets", [{"name": "reg"}])
        .set("spec.serviceAccountName", "trainer")
        .set("spec.image", "registry.local/trainer:1")
        .set("spec.imagePullPolicy", "Always")
        .build()
    )
    for template in pod_templates(render(job).workload).values():
        spec = template["spec"]
        assert spec["nodeSelector"] == {"gpu": "h100"}
        assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
        assert spec["priorityClassName"] == "p"
        assert spec["imagePullSecrets"] == [{"name": "reg"}]
        assert spec["serviceAccountName"] == "trainer"
        assert _main_container(template)["image"] == "registry.local/trainer:1"
        assert _main_container(template)["imagePullPolicy"] == "Always"


def test_image_option_and_layout() -> None:
    layout = Layout(config_dir="/cfg", datasets_dir="/ds", models_dir="/m", outputs_dir="/o", scratch_dir="/s")
    rendered = render(JobBuilder().build(), RenderOptions(image="my/image:2", layout=layout))
    assert _main_container(pod_templates(rendered.workload)["Master"])["image"] == "my/image:2"
    assert rendered.train_args["output_dir"] == "/o/team-a/demo"
    assert rendered.train_args["dataset_dir"] == "/o/team-a/demo/data"
    env = _env(_main_container(pod_templates(rendered.workload)["Master"]))
    # JIT-built ops survive a restart: on the job's outputs folder, not the per-pod scratch emptyDir.
    assert env["TORCH_EXTENSIONS_DIR"] == "/o/team-a/demo/.torch_extensions"
    assert env["TRITON_CACHE_DIR"] == "/s/triton"


def test_mpijob_rendezvous_comes_from_the_hostfile_not_a_guessed_service_name() -> None:
    job = JobBuilder().set("spec.distributed", {"backend": "mpijob", "masterPort": 29500}).build()
    rendered = render(job)
    launcher = _main_container(rendered.workload["spec"]["mpiReplicaSpecs"]["Launcher"]["template"])
    env = _env(launcher)
    # Service naming differs between mpi-operator releases; mpilaunch reads the hostfile it wrote.
    assert "MASTER_ADDR" not in env and env["MASTER_PORT"] == "29500"
    # The stop request reaches the ranks as SIGUSR1 at once (mpilaunch); Open MPI's own kill steps stay
    # short, so a launcher whose ranks have exited does not linger (its default, 1 s, is too short
    # for ranks still writing the checkpoint another rank has finished).
    assert env["OMPI_MCA_odls_base_sigkill_timeout"] == "5"
    argv = launcher["command"]
    assert "MASTER_PORT" in {argv[i + 1] for i, a in enumerate(argv) if a == "-x"}


# mpi-operator v2beta1 children (pkg/controller/mpi_job_controller.go: configSuffix, launcherSuffix,
# sshAuthSecretSuffix, workerSuffix, newJobService) and the Trainer v2 MPI plugin's
# (pkg/constants: MPIHostfileConfigMapSuffix "-mpi-hostfile", MPISSHAuthSecretSuffix "-mpi-ssh-auth").
UPSTREAM_CHILD_SUFFIXES = ["", "-config", "-launcher", "-worker", "-ssh", "-mpi-hostfile", "-mpi-ssh-auth"]


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob"])
def test_our_configmap_name_cannot_collide_with_what_mpi_operator_or_trainer_creates(backend: str) -> None:
    rendered = render(JobBuilder().build(), RenderOptions(backend=backend))
    name = rendered.workload["metadata"]["name"]
    cm = rendered.config_map["metadata"]["name"]
    assert cm not in {name + s for s in UPSTREAM_CHILD_SUFFIXES}
    assert not cm.startswith(name + "-worker-") and not cm.startswith(name + "-launcher")


def test_spec_file_names_the_backend_actually_rendered() -> None:
    import json

    rendered = render(JobBuilder().build(), RenderOptions(backend="mpijob"))
    spec = json.loads(rendered.files["finetunejob.json"])["spec"]
    assert spec["distributed"]["backend"] == "mpijob"


def test_tracking_sets_report_to_and_passes_secrets_only_by_reference() -> None:
    job = (
        JobBuilder()
        .set("metadata.uid", "1234-abcd")
        .set(
            "spec.tracking",
            {
                "tensorboard": {"enabled": False},
                "mlflow": {
                    "trackingUri": "http://mlflow.mlflow.svc:5000",
                    "tokenSecretRef": {"name": "mlflow", "key": "token"},
                },
                "wandb": {"project": "llm", "entity": "team", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}},
            },
        )
        .build()
    )
    rendered = render(job)
    assert rendered.train_args["report_to"] == ["mlflow", "wandb"] and "logging_dir" not in rendered.train_args
    container = _main_container(pod_templates(rendered.workload)["Master"])
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlflow.svc:5000"
    assert env["MLFLOW_EXPERIMENT_NAME"]["value"] == "team-a"  # the namespace by default
    assert env["MLFLOW_TRACKING_TOKEN"] == {
        "name": "MLFLOW_TRACKING_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}},
    }
    assert env["WANDB_API_KEY"] == {
        "name": "WANDB_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
    }
    assert env["WANDB_PROJECT"]["value"] == "llm" and env["WANDB_ENTITY"]["value"] == "team"
    assert env["WANDB_RUN_ID"]["value"] == "1234-abcd"  # a restarted pod continues the same W&B run


def test_tensorboard_is_on_by_default_with_event_files_on_the_outputs_volume() -> None:
    args = render(JobBuilder().build()).train_args
    assert args["report_to"] == ["tensorboard"]
    assert args["logging_dir"] == args["output_dir"] + "/runs"


@pytest.mark.parametrize("backend", ["pytorchjob", "mpijob"])
def test_rdma_devices_and_annotations_reach_the_pods_which_stay_restricted(backend: str) -> None:
    plain = render(
        JobBuilder().set("spec.resources", {"nodes": 2, "gpusPerNode": 8}).build(), RenderOptions(backend=backend)
    )
    for role, template in pod_templates(plain.workload).items():
        c = _main_container(template)
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, role
        assert template["spec"]["terminationGracePeriodSeconds"] == 300
        assert "annotations" not in template["metadata"]
    job = (
        JobBuilder()
        .set("spec.resources", {"nodes": 2, "gpusPerNode": 8, "extra": {"rdma/ib": 1}})
        .set("spec.scheduling", {"podAnnotations": {"k8s.v1.cni.cncf.io/networks": "ib-net"}})
        .set("spec.runPolicy", {"terminationGracePeriodSeconds": 900})
        .build()
    )
    rendered = render(job, RenderOptions(backend=backend))
    for role, template in pod_templates(rendered.workload).items():
        c = _main_container(template)
        assert template["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "ib-net"}, role
        assert template["spec"]["terminationGracePeriodSeconds"] == 900
        # No IPC_LOCK: added to a uid-1000 container it never reaches the effective set
        # (kubernetes/kubernetes#56374); RDMA jobs stay in the restricted profile.
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, role
        if role == "Launcher":  # mpirun only: no devices
            assert "rdma/ib" not in str(c["resources"])
            continue
        assert c["resources"]["limits"]["rdma/ib"] == 1 and c["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert _env(c)["KUBETUNE_STOP_GRACE_SECONDS"] == "885"


def test_liger_kernel_and_packing_map_onto_llamafactory() -> None:
    args = render(JobBuilder().set("spec.training", {"ligerKernel": True, "packing": "neat"}).build()).train_args
    assert args["enable_liger_kernel"] is True and args["packing"] is True and args["neat_packing"] is True
    plain = render(JobBuilder().build()).train_args
    assert "enable_liger_kernel" not in plain and "packing" not in plain and "neat_packing" not in plain
    assert render(JobBuilder().set("spec.training", {"packing": "packing"}).build()).train_args["packing"] is True


def test_optimizer_maps_onto_optim_and_unset_leaves_transformers_default() -> None:
    assert (
        render(JobBuilder().set("spec.training.optimizer", "adamw_torch").build()).train_args["optim"] == "adamw_torch"
    )
    assert "optim" not in render(JobBuilder().build()).train_args  # defaults unchanged until a GPU run measures them
