"""The emulated Kubernetes API server: one family, one core.

* ``emulator``: ``Cluster``, kmock's server with the API server's semantics (storage, uid /
  resourceVersion / generation, list and watch, error Status bodies, patches, finalizers, GC), for
  the operator's tests and everything built on it;
* ``ssa``: server-side apply after structured-merge-diff (managedFields, conflicts), used by ``emulator``;
* ``auth``: a token authority and the TokenReview API on top of ``Cluster``;
* ``helm``: ``HelmCluster``/``served_cluster``, ``Cluster`` plus what the real helm and kubectl need
  (version, OpenAPI v3, protobuf bodies, CRDs that start serving their kind);
* ``validation``: what the API server does to a custom resource from its CRD's schema (strict fields,
  the pruning algorithm, pruning of nulls, defaulting, OpenAPI, CEL with ``oldSelf``); ``Cluster``
  admits custom resources with it, and the agreement tests compare it with kubetune's own validation;
* ``crd``: apiextensions' creation-time checks of a CustomResourceDefinition (defaults must survive
  ``validation.pruned``); ``Cluster`` refuses a CRD they refuse.
"""
