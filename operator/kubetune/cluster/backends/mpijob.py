"""mpi-operator MPIJob (kubeflow.org/v2beta1) as it runs: mpirun on the Launcher pod starts one
process per GPU on the Worker pods and forwards every rank's output to the Launcher's log
(rendering: :mod:`kubetune.render.backends.mpijob`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .base import PodRef, WorkloadBackend, newest_matching
from .kubeflow import KUBEFLOW_REPLICA_TYPE_LABEL, KubeflowV1Backend, kubeflow_pod_ref


class MPIJobBackend(KubeflowV1Backend):
    name: ClassVar[str] = "mpijob"
    api_version: ClassVar[str] = "kubeflow.org/v2beta1"
    kind: ClassVar[str] = "MPIJob"
    plural: ClassVar[str] = "mpijobs"
    controller: ClassVar[str] = "mpi-operator (MPIJob kubeflow.org/v2beta1)"

    def rank0_pod(self, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """The Launcher: mpirun forwards every rank's output there."""
        return newest_matching(pods, {KUBEFLOW_REPLICA_TYPE_LABEL: "launcher"})

    def pod_for_rank(self, job_name: str, rank: int | None) -> PodRef:
        """Without a rank, the Launcher (mpirun forwards every rank's output); --rank N is Worker N."""
        if rank is None:
            return kubeflow_pod_ref(job_name, "launcher", 0, "launcher", self.kind)
        return kubeflow_pod_ref(job_name, "worker", rank, "worker", self.kind)

    def refused_changes(
        self, running: Mapping[str, Any], wanted: Mapping[str, Any], observed: Mapping[str, Any]
    ) -> list[str]:
        """Nothing is refused: mpi-operator v0.8.0 has no admission webhook and its v2beta1 CRD no
        transition rules (manifests/base/kubeflow.org_mpijobs.yaml @ v0.8.0); it validates the job as
        a whole at sync (pkg/apis/kubeflow/validation/validation.go:49 ValidateMPIJob) and copies the
        launcher's scheduling directives only on a resume (pkg/controller/mpi_job_controller.go:704-708,
        syncLauncherSchedulingDirectives :1654).  A change reaches only pods created after it."""
        return []


_CONFORMS: WorkloadBackend = MPIJobBackend()
"""Static check (mypy) that the class implements the backend Protocol."""
