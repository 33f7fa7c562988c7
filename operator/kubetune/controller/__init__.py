"""The kubetune operator: FineTuneJob -> ConfigMap + the training child (a Kubeflow PyTorchJob, MPIJob
or Trainer v2 TrainJob: one backend each, ``kubetune.cluster.backends``, rendered by
``kubetune.render.backends``; ``discovery`` chooses for ``backend: auto``), then, once it Succeeded,
the serving objects of ``spec.serve`` (one engine each, ``kubetune.cluster.serving``, rendered by
``kubetune.render.serving``), and status back.

One path per reconcile, observe -> decide -> act:

* ``snapshot.observe`` builds one immutable ``Snapshot`` of a FineTuneJob from the watch caches
  (``cache``: children, training pods, serving objects and PVCs; the FineTuneJob from kopf's watch),
  the last progress report (``intake`` push board, else a rank-0 log tail at a low rate,
  ``progress``), and the prerequisites' presence;
* ``decide.decide`` (pure) turns it into a ``Decision``: desired children (``render()``, and
  ``render_serving()`` after success), the complete desired status, Events, and when to look
  again; reasons and hints come from ``reasons``, condition and pod-status helpers from
  ``conditions``;
* ``act.Executor`` applies it: server-side apply of the children, one status patch with a
  resourceVersion precondition, Events deduplicated and aggregated.

``loop`` holds the work queue and the workers; ``handlers`` (kopf) and the informers only enqueue
keys.  ``main`` is the process (flags, logs, metrics, health, peering).  Every API call goes through
``kube`` or kopf (credentials from ``kubeconfig``, kubectl's rules);
``tests/controller/expected_api_calls.json`` lists them all.  ``runtime`` holds what the parts share
(settings, the client, metrics, the progress board); ``intake`` is the progress push endpoint;
``peering`` pauses the workers when kopf pauses.
"""
