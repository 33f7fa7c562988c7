"""What the renderers of KServe's two engines share (:mod:`.inferenceservice`, :mod:`.llminferenceservice`):
engine ``kserve`` picks one of them (:func:`kubetune.cluster.serving.kserve.kserve_kind`), and both
take the same resources, placement and checks.
"""

from __future__ import annotations

from typing import Any, Final

from kubetune.api import FineTuneJob

from kubetune.cluster.serving.base import adapter_served
from kubetune.cluster.serving.kserve import kserve_kind

from ..podspec import placement

KSERVE_DEFAULT_CPU: Final = "4"
KSERVE_DEFAULT_MEMORY: Final = "32Gi"
"""engine kserve without spec.serve.cpu / memory.  KServe strategic-merges the ServingRuntime's container
into the predictor's (pkg/utils/container_merge.go:32-62 @v0.20.0, MergeContainerWithPatch), so limits
the predictor leaves out keep the runtime's: kserve-huggingfaceserver sets requests and limits of
cpu "1" and memory "2Gi" (config/runtimes/kserve-huggingfaceserver.yaml:34-40 @v0.20.0): a CPU request
above 1 would make the pod invalid, and 2Gi is an OOM for any LLM.  So both are always explicit."""
KSERVE_DEFAULTS: Final = (KSERVE_DEFAULT_CPU, KSERVE_DEFAULT_MEMORY)


def pod_fields(job: FineTuneJob) -> dict[str, Any]:
    # Placement, pull secrets and the ServiceAccount: the predictor inlines a PodSpec
    # (pkg/apis/serving/v1beta1/predictor.go:84 @v0.20.0, `PodSpec json:",inline"`), the
    # LLMInferenceService's template is a PodSpec (pkg/apis/serving/v1alpha1/llm_inference_service_types.go:164).
    # KServe strategic-merges the predictor's PodSpec over the runtime's nodeSelector, affinity,
    # tolerations and imagePullSecrets (pkg/controller/v1beta1/inferenceservice/utils/utils.go:267-293
    # @v0.20.0, MergePodSpec), and appends the predictor's args to the runtime's (utils.go:259-260), so
    # our --model_name follows the runtime's --model_name={{.Name}} and, parsed last, wins.
    return placement(job)


MODEL_SOURCE_FIELD: Final = "spec.serve.modelSource"
KSERVE_S3_KEYS: Final = ("awsAccessKeyID", "awsSecretAccessKey")
"""The Secret keys KServe v0.20.0 reads S3 credentials from (pkg/credentials/s3/s3_secret.go:17-18)."""


def reads_bucket(job: FineTuneJob) -> bool:
    """spec.serve.modelSource is bucket: the serving pods read the trained model from spec.storage.outputs.uri."""
    serve = job.spec.serve
    return serve is not None and serve.model_source == "bucket"


def bucket_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    """What modelSource bucket cannot serve, as KServe v0.20.0's storage initializer reads a bucket."""
    spec = job.spec
    if not reads_bucket(job):
        return []
    uri = spec.storage.outputs.uri
    store = spec.storage.object_store
    if kserve_kind(job) != "InferenceService":
        return [
            (
                MODEL_SOURCE_FIELD,
                "engine kserve reads the bucket with kind InferenceService only (one merged model): "
                "set spec.export.enabled and kind InferenceService, use engine vllm, or modelSource: volume",
            )
        ]
    if uri is None:
        return [
            (
                MODEL_SOURCE_FIELD,
                "bucket serves the copy uploaded to spec.storage.outputs.uri, which is unset: "
                "set outputs.uri (s3://) or modelSource: volume",
            )
        ]
    if uri.startswith("gs://"):
        # KServe downloads gs:// with google-cloud-storage's Client and Application Default Credentials,
        # else anonymously (python/storage/kserve_storage/kserve_storage.py:686-689 @v0.20.0): not the HMAC key
        # of objectStore.credentialsSecretRef that the job's own gs:// access signs with.
        return [
            (
                MODEL_SOURCE_FIELD,
                "bucket is not supported for gs:// outputs: KServe reads gs:// with Google's own credentials "
                "(Application Default Credentials), not the job's HMAC key; use modelSource: volume",
            )
        ]
    if uri.startswith("az://"):
        # KServe v0.20.0 reads Azure Blob only as storageUri https://<account>.blob.core.windows.net/<container>/<prefix>
        # (_AZURE_BLOB_RE, python/storage/kserve_storage/kserve_storage.py:51-54; _parse_azure_uri :1122-1131 always
        # builds https://<host>, so no other endpoint), with a service principal or AZURE_STORAGE_ACCESS_KEY from the
        # ServiceAccount's Secret (:1133-1162; pkg/credentials/azure/azure_secret.go:24-45): never a connection string,
        # which is what the job's own az:// access reads.  One Secret cannot serve both: refused.
        return [
            (
                MODEL_SOURCE_FIELD,
                "bucket is not supported for az:// outputs with engine kserve: "
                "KServe reads Azure Blob only as https://<account>.blob.core.windows.net/... with a service principal "
                "or an AZURE_STORAGE_ACCESS_KEY Secret, not the job's connection string; "
                "use engine vllm (its init container reads az:// with the job's credentials) or modelSource: volume",
            )
        ]
    if spec.method in ("full", "freeze"):
        # The storage initializer downloads every object under the storageUri prefix
        # (kserve_storage.py:533 @v0.20.0, bucket.objects.filter(Prefix=...)): for a full model that is the
        # job's whole prefix, every uploaded checkpoint-N/ included.
        return [
            (
                MODEL_SOURCE_FIELD,
                f"bucket serves a merged LoRA model only: a {spec.method} job's model is the job's whole prefix in "
                "the bucket, which KServe would download with every checkpoint-N/; use modelSource: volume",
            )
        ]
    if store is not None and store.ca_bundle is not None:
        return [
            (
                MODEL_SOURCE_FIELD,
                "bucket with spec.storage.objectStore.caBundle is not supported yet (KServe reads a CA from a "
                "ConfigMap key cabundle.crt named on the credentials Secret); use modelSource: volume",
            )
        ]
    if store is not None and store.credentials_secret_ref is not None and spec.service_account_name is None:
        # KServe's storage initializer gets S3 keys from the Secrets the predictor's ServiceAccount lists
        # (pkg/credentials/service_account_credentials.go:214-266 @v0.20.0; "default" when unnamed).
        return [
            (
                MODEL_SOURCE_FIELD,
                "bucket needs spec.serviceAccountName: KServe takes the S3 keys from the Secrets listed in the "
                f"predictor's ServiceAccount (secrets: [{{name: {store.credentials_secret_ref.name}}}]); "
                "create one listing the Secret and name it there",
            )
        ]
    creds = store.credentials_secret_ref if store is not None else None
    if creds is not None and (creds.access_key_id_key, creds.secret_access_key_key) != KSERVE_S3_KEYS:
        # KServe's credential builder uses a ServiceAccount's Secret for S3 only when it holds the key
        # awsSecretAccessKey (pkg/credentials/service_account_credentials.go:281-293 @v0.20.0), and then maps
        # awsAccessKeyID/awsSecretAccessKey to AWS_* (pkg/credentials/s3/s3_secret.go:17-18,57-88 @v0.20.0),
        # unless the cluster's inferenceservice-config renames them.  A Secret with only kubetune's default
        # keys is skipped silently: the storage initializer then runs without credentials.
        return [
            (
                MODEL_SOURCE_FIELD,
                f"bucket: KServe's storage initializer reads the S3 keys {KSERVE_S3_KEYS[0]} and {KSERVE_S3_KEYS[1]} "
                f"of the Secret (a Secret without {KSERVE_S3_KEYS[1]} is skipped and the download runs without "
                f"credentials); add those keys to Secret {creds.name} and set "
                f"spec.storage.objectStore.credentialsSecretRef accessKeyIdKey: {KSERVE_S3_KEYS[0]}, "
                f"secretAccessKeyKey: {KSERVE_S3_KEYS[1]}, or use modelSource: volume",
            )
        ]
    return []


def kserve_problems(job: FineTuneJob) -> list[tuple[str, str]]:
    spec = job.spec
    if problems := bucket_problems(job):
        return problems
    if adapter_served(job) and spec.model.name is not None and "/" not in spec.model.name:
        # KServe's storage initializer accepts only hf://owner/model[:revision]
        # (python/storage/kserve_storage/kserve_storage.py:629-636 @v0.20.0).
        return [
            (
                "spec.model.name",
                f"{spec.model.name!r} has no owner: KServe downloads hf://owner/model only; use the full Hub id "
                "(for example openai-community/gpt2) or engine vllm",
            )
        ]
    return []
