{{/* Names and labels shared by every template. */}}

{{- define "kubetune.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name, plus "-kubetune" unless it already says so. */}}
{{- define "kubetune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; `kubetune.labels` adds the operator's component label. */}}
{{- define "kubetune.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selects the operator pod (Deployment selector, Service, ServiceMonitor). */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetune.labels" -}}
{{ include "kubetune.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: <registry>/<repository>:<tag>, or <repository>:<tag> when registry is empty. */}}
{{- define "kubetune.imageRef" -}}
{{- $root := index . 0 -}}{{- $image := index . 1 -}}
{{- $repo := $image.repository -}}
{{- with $root.Values.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $image.repository }}{{ end -}}
{{- printf "%s:%s" $repo (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "kubetune.image" -}}
{{- include "kubetune.imageRef" (list . .Values.image) -}}
{{- end -}}

{{- define "kubetune.trainerImage" -}}
{{- include "kubetune.imageRef" (list . .Values.trainer.image) -}}
{{- end -}}

{{/*
The images of this release that still point at the default registry ghcr.io/kubetune, where no
kubetune image is published yet (images/README.md), comma-separated; "" when none does.
*/}}
{{- define "kubetune.unpublishedImages" -}}
{{- $refs := list -}}
{{- range $ref := list (include "kubetune.image" .) (include "kubetune.trainerImage" .) -}}
{{- if hasPrefix "ghcr.io/kubetune/" $ref -}}{{- $refs = append $refs $ref -}}{{- end -}}
{{- end -}}
{{- join ", " $refs -}}
{{- end -}}

{{/*
RBAC rules for namespaced resources: exactly the API calls the operator makes
(tests/controller/expected_api_calls.json; tests/chart/test_chart_rbac.py compares the two).
Granted by one ClusterRole (all namespaces) or one Role per watched namespace.
*/}}
{{- define "kubetune.rules.namespaced" -}}
# kopf lists and watches FineTuneJobs (an event handler only: it writes nothing to them).
- apiGroups: [kubetune.io]
  resources: [finetunejobs]
  verbs: [list, watch]
# Phase, conditions, progress and retries: one merge patch with a resourceVersion precondition.
- apiGroups: [kubetune.io]
  resources: [finetunejobs/status]
  verbs: [patch]
# FineTuneSweeps: kopf lists and watches them (an event handler only); the study (every trial's
# parameters, state and values) is their status, one merge patch with a resourceVersion precondition.
- apiGroups: [kubetune.io]
  resources: [finetunesweeps]
  verbs: [list, watch]
- apiGroups: [kubetune.io]
  resources: [finetunesweeps/status]
  verbs: [patch]
# A sweep's trials are FineTuneJobs it owns: written with server-side apply (authorized as create
# when new; the best trial is applied again with spec.serve when spec.promote is serve) and deleted
# when the pruner stops them or the sweep fails. Deleting the sweep deletes them (ownerReferences).
- apiGroups: [kubetune.io]
  resources: [finetunejobs]
  verbs: [create, patch, delete]
# Children, written with server-side apply (a PATCH, authorized as create when the object is
# new): the ConfigMap (train.yaml, ds_config.json, dataset_info.json; read back to compare a spec
# edit with the spec the pods run) and the Kubeflow PyTorchJob (kubeflow.org/v1) or MPIJob
# (kubeflow.org/v2beta1), whose status the operator follows through a watch. Deleting a
# FineTuneJob deletes them through ownerReferences (the garbage collector), not the operator.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# delete: a job past spec.runPolicy.backoffLimit that Kueue manages (label kueue.x-k8s.io/queue-name)
# is deleted to free its GPUs; Kueue would resume a suspended one.
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs, mpijobs]
  verbs: [list, watch, create, patch, delete]
# spec.serve, only after a job Succeeded: the serving objects, written with server-side apply and
# owned by the FineTuneJob (the garbage collector deletes them with it). The Deployment and Service
# (engine vllm) and the KServe/KAITO objects are watched (label app.kubernetes.io/component=serving)
# for readiness, their URL and deletion (a deleted one is created again). KServe's and KAITO's kinds
# are granted even where they are not installed (RBAC on a missing resource grants nothing).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices, llminferenceservices]
  verbs: [list, watch, create, patch]
- apiGroups: [kaito.sh]
  resources: [workspaces]
  verbs: [list, watch, create, patch]
# engine kaito: the adapter is copied (a Job, watched until it completes) to a claim of its own
# whose root KAITO mounts as the adapter folder; vLLM's flags go in a ConfigMap (configmaps above).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch]
# Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1): backend trainjob (and auto).
# Each backend's rules are in its module (operator/kubetune/cluster/backends/*.py, rbac());
# tests/chart/test_chart_backend_rbac.py checks this chart grants every one of them.
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [list, watch, create, patch, delete]
# Not an API call: the children's ownerReferences set blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (e.g. OpenShift) allow only to clients
# that can update the owner's finalizers.
- apiGroups: [kubetune.io]
  resources: [finetunejobs/finalizers]
  verbs: [update]
# Training pods (label training.kubeflow.org/job-name), watched: why a job is pending or failed
# (Unschedulable, OOMKilled, ImagePullBackOff, a missing Secret or PVC) and retryable exits ...
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# ... and the rank-0 pod's log, where the trainer prints progress lines.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Prerequisites checked before the children are created: the PVCs and the Kueue LocalQueue the
# spec names (only whether they exist; Secrets are not read: a missing one shows on the pod).
# PVCs: list/watch, one informer instead of a GET per job (a claim created later is seen at once).
# create/patch: spec.serve engine kaito's adapter claim (server-side apply, owned by the job).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, watch, create, patch]
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
# Events on FineTuneJobs; a repeated identical Event is counted (patched), not posted again.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.watchNamespaces }}
# kopf peering, per namespace: watch the KopfPeering and announce this operator in it
# (get: the operator checks it exists at start, and its workers read it to pause together with kopf).
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* RBAC rules for cluster-scoped resources. */}}
{{- define "kubetune.rules.cluster" -}}
# backend auto: whether kubetune's Kubeflow Trainer v2 runtime exists (one named object, read only).
- apiGroups: [trainer.kubeflow.org]
  resources: [clustertrainingruntimes]
  resourceNames: [kubetune-llamafactory]
  verbs: [get]
{{- if .Values.progress.push }}
# The progress intake asks the API server whether a trainer's token (audience kubetune, bound
# to its pod) is valid: TokenReview, a create-only, cluster-scoped review (nothing is stored).
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
{{- end }}
{{- if not .Values.watchNamespaces }}
# kopf peering, cluster-wide: watch the ClusterKopfPeering and announce this operator in it
# (get: the operator checks it exists at start, and its workers read it to pause together with kopf).
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/*
kubetune.runtimeOwner: "" when this release may render ClusterTrainingRuntime kubetune-llamafactory
(it does not exist, or its Helm ownership annotations name this release and namespace, the
metadata helm's own ownership check compares), else "<release> in namespace <ns>" (or "not
Helm", for one applied with kubectl) of the object that exists. `lookup` reads the cluster during
install/upgrade; it finds nothing under `helm template` and Argo CD, which therefore always render it.
*/}}
{{- define "kubetune.runtimeOwner" -}}
{{- $existing := lookup "trainer.kubeflow.org/v1alpha1" "ClusterTrainingRuntime" "" "kubetune-llamafactory" -}}
{{- if $existing -}}
{{- $annotations := (($existing.metadata).annotations) | default dict -}}
{{- $release := index $annotations "meta.helm.sh/release-name" | default "" -}}
{{- $namespace := index $annotations "meta.helm.sh/release-namespace" | default "" -}}
{{- if not (and (eq $release .Release.Name) (eq $namespace .Release.Namespace)) -}}
{{- if $release -}}release {{ $release }} in namespace {{ $namespace }}{{- else -}}not Helm (applied another way){{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
