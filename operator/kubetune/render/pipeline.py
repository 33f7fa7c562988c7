"""``render(job, options) -> Rendered``: named phases on one typed :class:`Plan`.

Order matters and is written down once here:

1. ``resolve``    - names, namespace, output folder, backend, launcher, image, queue, labels
2. ``training``   - train.yaml and the other ConfigMap files
3. ``scheduling`` - pod-level placement shared by every replica
4. ``pod_spec``   - env, volumes, resources, security contexts
5. ``build``      - the ConfigMap and the backend's Kubeflow job

Pure: no I/O, no clock, no randomness; the same job renders byte-identical output.
"""

from __future__ import annotations


from kubetune.api import FineTuneJob
from kubetune.api.contract import (
    ACCELERATE_FILE,
    DATASET_INFO_FILE,
    DEEPSPEED_FILE,
    EVAL_ARGS_FILE,
    EXPORT_ARGS_FILE,
    SPEC_FILE,
    TRAIN_ARGS_FILE,
)

from . import configs
from .backends import renderer_for
from .ownership import job_labels, owner_references
from .lfargs import train_args, uses_deepspeed_config
from .intermediate import Plan
from .podspec import build_pod_spec, schedule
from .templating import render_manifest
from .types import Rendered, RenderOptions

CONFIG_MAP_SUFFIX = "-kubetune"
"""Not ``-config``: mpi-operator v2beta1 creates ``<mpijob>-config`` for its hostfile and
refuses to run when an object of that name exists that it does not own."""


def resolve(job: FineTuneJob, options: RenderOptions) -> Plan:
    """Phase 1: every default and option settled once, so later phases never re-decide them."""
    namespace = job.metadata.namespace or options.default_namespace
    chosen = options.backend or job.spec.distributed.backend
    backend = renderer_for(chosen)  # auto renders as pytorchjob here; the operator passes its choice in options
    problems = backend.check(job)
    if problems:
        raise ValueError("; ".join(p.message for p in problems))
    d = job.spec.distributed
    launcher = d.launcher_for(backend.name)
    queue = job.spec.scheduling.queue_name if job.spec.scheduling and job.spec.scheduling.queue_name else None
    return Plan(
        job=job,
        options=options,
        name=job.name,
        namespace=namespace,
        output_dir=options.layout.job_output_dir(namespace, job.name),
        backend=backend.name,
        launcher=launcher,
        image=job.spec.image or options.image,
        queue=queue or options.default_queue,
        labels=job_labels(job),
        owner_references=owner_references(job),
        config_map_name=job.name + CONFIG_MAP_SUFFIX,
    )


def training(plan: Plan) -> None:
    """Phase 2: what LLaMA-Factory and the trainer read - the ConfigMap's files."""
    job, layout = plan.job, plan.options.layout
    opts = plan.options
    plan.train_args = train_args(job, layout, plan.output_dir, plan.launcher, opts.model_source, opts.reward_source)
    files = {
        SPEC_FILE: configs.dump_json(configs.spec_document(job, plan.namespace, plan.backend, plan.options.auto_tune)),
        TRAIN_ARGS_FILE: configs.dump_yaml(plan.train_args),
        DATASET_INFO_FILE: configs.dump_json(configs.dataset_info(job, layout)),
    }
    if uses_deepspeed_config(job, plan.launcher):
        files[DEEPSPEED_FILE] = configs.dump_json(configs.deepspeed_config(job))
    if plan.launcher == "accelerate":
        files[ACCELERATE_FILE] = configs.dump_yaml(configs.accelerate_config(job, layout))
    if job.spec.export.enabled:
        files[EXPORT_ARGS_FILE] = configs.dump_yaml(
            configs.export_args(job, layout, plan.output_dir, opts.model_source)
        )
    evaluation = configs.evaluation_config(job, layout, plan.output_dir, opts.model_source)
    if evaluation is not None:
        files[EVAL_ARGS_FILE] = configs.dump_json(evaluation)
    plan.files = dict(sorted(files.items()))


def build(plan: Plan) -> Rendered:
    """Phase 5: the ConfigMap, then the backend's job; both from JSON templates."""
    config_map = render_manifest("configmap.json.j2", plan=plan)
    workload = renderer_for(plan.backend).build(plan)
    return Rendered(
        job=plan.job,
        train_args=plan.train_args,
        files=plan.files,
        config_map=config_map,
        workload=workload,
    )


def render(job: FineTuneJob, options: RenderOptions | None = None) -> Rendered:
    """Everything one valid FineTuneJob becomes. Raises ValueError only for an
    option that contradicts the spec (``--backend mpijob`` with launcher torchrun)."""
    plan = resolve(job, options or RenderOptions())
    training(plan)
    schedule(plan)
    build_pod_spec(plan)
    return build(plan)
