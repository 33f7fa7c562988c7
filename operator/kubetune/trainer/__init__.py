"""The training entrypoint: ``python -m kubetune.trainer`` inside every training pod.

It is driven only by the job's ConfigMap (mounted at ``$KUBETUNE_CONFIG_DIR``,
see :mod:`kubetune.api.contract`) and the environment the pod gets from the
renderer and the Kubeflow controller.  Stages, each in its own module and each
announced on stdout with ``kubetune.stage {"stage", "event"}`` lines:

``data`` (:mod:`.data`) -> ``model`` (:mod:`.model`) -> ``train`` (:mod:`.train`,
with :mod:`.progress` following ``trainer_log.jsonl``) -> ``export``
(:mod:`.export`) -> ``record`` (:mod:`.record`).

Exit codes (the operator's restart policy reads them; Kubeflow's ``ExitCode``
policy treats 1-127 as permanent and 128-255 as retryable):

* ``0`` (EXIT_OK): trained (and exported).
* ``2`` (EXIT_CONFIG): the mounted configuration is missing or invalid, or the
  model cannot be found.  A restart would read the same files: permanent.
* ``3`` (EXIT_DATA): a dataset cannot be fetched or a record is malformed: permanent.
* ``4`` (EXIT_TRAINING): training crashed for a reason a restart will not fix
  (CUDA out of memory, a Python error in the training loop): permanent.
* ``130`` (EXIT_RETRYABLE): SIGTERM (preemption, node drain), a worker killed by
  a signal, a rendezvous/NCCL/network failure, a peer that never finished the
  data stage: restart the pod; training resumes from the newest complete
  checkpoint.

This package imports only :mod:`kubetune.api` from kubetune (import-linter
enforces it): it runs in the trainer image, where the renderer is not needed.
"""
