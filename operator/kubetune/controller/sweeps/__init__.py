"""The FineTuneSweep controller: a sweep's trials are FineTuneJobs it owns, run by the FineTuneJob
controller like any other job; this package only decides which trials exist, reads their results,
prunes, and promotes the winner.

The same shape as the FineTuneJob controller, one module per concern:

* ``snapshot.observe`` builds one immutable ``SweepSnapshot`` from kopf's watch of FineTuneSweeps
  and an informer of the trials (FineTuneJobs labelled ``kubetune.io/finetunesweep``, with a
  controller ownerReference to the sweep), listed in full before the sweep worker starts;
* ``decide.decide_sweep`` (pure) turns it into a ``SweepDecision``: the whole desired status (the
  study: trials asked with their parameters, states, values), the trial FineTuneJobs to apply, the
  pruned ones to delete, and the winner to promote; the search itself is ``kubetune.sweep``'s;
* ``act.SweepExecutor`` applies it: the status FIRST (a merge patch with a resourceVersion
  precondition), then the trials by server-side apply, then deletions and the promotion, so a
  trial is recorded before its FineTuneJob exists and a restart never asks the sampler twice;
* ``loop.SweepController`` holds the work queue of sweep keys and its worker.
"""
