"""The kubetune operator: FineTuneJob -> ConfigMap + Kubeflow PyTorchJob/MPIJob, and status back.

Modules, from the outside in: ``main`` (process: flags, logging, metrics, kopf),
``handlers`` (thin kopf handlers), ``sync`` (the status loop that mirrors the
child job and reads progress), ``status`` and ``progress`` (pure functions the
tests pin down), ``children`` (apply and adopt children) and ``kube`` (a small
async Kubernetes client; every API call the operator makes goes through it or
through kopf, and ``tests/controller/expected_api_calls.json`` lists them).
"""
