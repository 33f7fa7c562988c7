"""What kubetune knows about the objects it runs in a cluster, beside rendering them.

One registry per concern: :data:`kubetune.cluster.backends.BACKENDS` (the training child's kinds:
PyTorchJob, MPIJob, TrainJob) and :data:`kubetune.cluster.serving.ENGINES` (the serving engines).
Each entry says, for its kinds: apiVersion, kind and plural; how the child's (or the serving
object's) status reads in kubetune's terms; which pod is rank 0 and the labels its pods carry; the
RBAC rules the operator needs; who acts on the kind (the install hint); and which changes of a
running child its API server refuses.

Who reads it: the operator (``kubetune.controller``: what it applies, watches, grants and reports),
the terminal client and the SDK (``kubetune get/watch/logs``: rank 0's pod), the CLI (the
``--backend`` choices), the chart's RBAC tests, and the renderer (``kubetune.render``), which writes
the kinds declared here and keeps, per registered backend and engine, how it renders one.

Pure, like ``api``: no I/O, no cluster client, no clock; it imports only ``kubetune.api``.
"""
