"""The test-support package: every helper the tests share, imported as ``tests.support.<module>``.

pyproject's ``[tool.pytest.ini_options] pythonpath = ["."]`` puts the repository root on sys.path (the
one entry, said rather than left to the default import mode's side effect), so a test
module anywhere under tests/ writes ``from tests.support.apiserver.emulator import Cluster``; the
regeneration scripts run as ``python -m tests.support.update_golden`` from the root (.ci/regen).

* ``apiserver/``: the emulated Kubernetes API server and its checks, one family (see its __init__);
* ``harness``: the operator-in-a-thread harness and the controller tests' fixtures
  (``cluster``, ``config``, ``operator``; tests/controller/conftest.py imports them);
* ``kubeflow``, ``trainer_v2``, ``sweeplib``, ``pushlib``, ``exec_plugin``: what the controller
  tests play beside the API server (Kubeflow's controllers, Trainer v2, a sweep, the progress push,
  a kubeconfig exec plugin);
* ``renderlib``, ``strategies``, ``chartlib``, ``trainerlib``, ``kt_corpus``, ``kt_hostile``,
  ``kt_s3``, ``kt_azurite``, ``kt_time``, ``kt_upstream``, ``lf_probe``: per-area helpers;
* ``update_golden``, ``update_llamafactory_catalog``, ``update_sdk_docs``: run by ``bash .ci/regen``.
"""
