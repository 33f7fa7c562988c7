"""The kubetune operator: FineTuneJob -> ConfigMap + Kubeflow PyTorchJob/MPIJob, and status back.

Modules, from the outside in: ``main`` (process: flags, JSON logs, metrics,
health, kopf and peering), ``handlers`` (thin kopf handlers), ``reconcile``
(start a job, react to spec edits), ``sync`` (the status loop that mirrors the
child job and reads progress; ``peering`` pauses it like kopf pauses its
handlers), ``status`` and ``progress`` (pure rules the tests pin down),
``children`` (server-side apply of the rendered children), ``runtime``
(settings, Events, retry policy), ``metrics`` and ``kube`` (a small async
client).  Every API call goes through ``kube`` or kopf;
``tests/controller/expected_api_calls.json`` lists them all.
"""
