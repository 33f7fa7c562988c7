"""The FineTuneSweep cases shared by tests/sweep: a good sweep (BASE), and the bad ones (BAD: how to break
BASE's spec, the field the refusal names, words of the fix), refused by `kubetune validate` and, for the rules
the CRD carries, by the generated CRD's CEL rules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneSweep",
    "metadata": {"name": "lr"},
    "spec": {
        "template": {
            "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "template": "qwen"},
            "datasets": [{"name": "d", "hub": "a/b"}],
            "storage": {"outputs": {"claimName": "out"}},
            "training": {"valSize": 0.1, "evalSteps": 10},
            "evaluation": {"datasets": [{"name": "e", "hub": "a/c"}]},
        },
        "parameters": [
            {"path": "training.learningRate", "type": "float", "min": 1e-5, "max": 1e-3, "log": True},
            {"path": "lora.rank", "type": "int", "min": 4, "max": 64},
        ],
        "objective": {"metric": "evalLoss"},
        "maxTrials": 6,
    },
}


def variant(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc["spec"])
    return doc


def add(param: dict[str, Any]) -> Callable[[dict[str, Any]], object]:
    return lambda s: s["parameters"].append(param)


BAD = {
    "inverted range": (
        lambda s: s["parameters"][0].update(min=1e-2),
        "spec.parameters[0].max",
        "min must be below max",
    ),
    "empty range": (
        lambda s: s["parameters"][1].update(min=8, max=8),
        "spec.parameters[1].max",
        "min must be below max",
    ),
    "categorical without values": (
        add({"path": "training.scheduler", "type": "categorical"}),
        "spec.parameters[2].values",
        "type categorical needs values",
    ),
    "categorical with an empty list": (
        add({"path": "training.scheduler", "type": "categorical", "values": []}),
        "spec.parameters[2].values",
        "at least 1 item",
    ),
    "unknown path": (
        add({"path": "training.learningRat", "type": "float", "min": 0.1, "max": 0.2}),
        "spec.parameters[2].path",
        "training has no field 'learningRat'",
    ),
    "path outside the spec": (
        add({"path": "bogus.x", "type": "float", "min": 0.1, "max": 0.2}),
        "spec.parameters[2].path",
        "has no field 'bogus'",
    ),
    "field that changes on a running job": (
        add({"path": "suspend", "type": "categorical", "values": [True, False]}),
        "spec.parameters[2].path",
        "spec.suspend can change on a running FineTuneJob",
    ),
    "evaluation field": (
        add({"path": "evaluation.maxSamples", "type": "int", "min": 1, "max": 9}),
        "spec.parameters[2].path",
        "spec.evaluation can change on a running FineTuneJob",
    ),
    "an object": (
        add({"path": "lora", "type": "int", "min": 1, "max": 2}),
        "spec.parameters[2].path",
        "lora is an object, not a value",
    ),
    "a list": (
        add({"path": "lora.targetModules", "type": "categorical", "values": ["all"]}),
        "spec.parameters[2].path",
        "is not a single value",
    ),
    "float range on an integer field": (
        add({"path": "training.cutoffLength", "type": "float", "min": 512, "max": 1024}),
        "spec.parameters[2].type",
        "is an integer field: use type: int",
    ),
    "range on a string field": (
        add({"path": "training.scheduler", "type": "float", "min": 0, "max": 1}),
        "spec.parameters[2].type",
        "use type: categorical",
    ),
    "value not allowed by the field": (
        add({"path": "training.scheduler", "type": "categorical", "values": ["cosine", "sideways"]}),
        "spec.parameters[2].values",
        "training.scheduler = 'sideways' makes the trial invalid",
    ),
    "range beyond the field's bounds": (
        lambda s: s["parameters"][1].update(max=4096),
        "spec.parameters[1].max",
        "lora.rank = 4096 makes the trial invalid: spec.template.lora.rank: input should be less than or equal to 1024",
    ),
    "int range with fractions": (
        lambda s: s["parameters"][1].update(min=4.5),
        "spec.parameters[1].type",
        "whole-number min, max and step",
    ),
    "log with a zero min": (lambda s: s["parameters"][0].update(min=0), "spec.parameters[0].min", "needs min > 0"),
    "duplicate paths": (
        add({"path": "lora.rank", "type": "int", "min": 8, "max": 16}),
        "spec.parameters",
        "must be unique",
    ),
    "generation metric without generation": (
        lambda s: s.update(objective={"metric": "rougeL", "goal": "maximize"}),
        "spec.objective.metric",
        "set spec.template.evaluation.generation: true",
    ),
    "perplexity of a dpo job": (
        lambda s: (
            s.update(objective={"metric": "perplexity"})
            or s["template"]["training"].update(stage="dpo")
            or [d.update(ranking=True) for d in s["template"]["datasets"] + s["template"]["evaluation"]["datasets"]]
        ),
        "spec.objective.metric",
        "perplexity is reported for stages pt and sft only",
    ),
    "unknown metric": (
        lambda s: s.update(objective={"metric": "accuracy"}),
        "spec.objective.metric",
        "'accuracy' is not allowed; use 'evalLoss', 'perplexity', 'bleu4', 'rouge1', 'rouge2' or 'rougeL'",
    ),
    "parallelism above maxTrials": (
        lambda s: s.update(parallelism=7),
        "spec.parallelism",
        "lower parallelism to maxTrials or fewer",
    ),
    "no evaluation": (
        lambda s: s["template"].pop("evaluation"),
        "spec.template.evaluation",
        "spec.template.evaluation is required",
    ),
    "pruning without evaluation during training": (
        lambda s: s["template"].update(training={}),
        "spec.earlyStopping",
        "set spec.template.training.valSize",
    ),
    "invalid template": (
        lambda s: s["template"].update(method="qlora"),
        "spec.template.quantization",
        "spec.template.method qlora needs spec.template.quantization.bits",
    ),
    "invalid template field": (
        lambda s: s["template"]["training"].update(learningRate="fast"),
        "spec.template.training.learningRate",
        "must be a number (e.g. 1.0e-4, unquoted), got 'fast'",
    ),
    "template of an unknown chat template": (
        lambda s: s["template"]["model"].update(template="qwen9"),
        "spec.template.model.template",
        "'qwen9' is not a LLaMA-Factory 0.9.5 template; did you mean 'qwen'",
    ),
    "promote serve without serve": (lambda s: s.update(promote="serve"), "spec.promote", "set spec.template.serve"),
    "serve without promote": (
        lambda s: s["template"].update(serve={"engine": "vllm"}),
        "spec.template.serve",
        "would serve every trial",
    ),
    "grid over a float without step": (
        lambda s: s.update(algorithm="grid"),
        "spec.parameters",
        "give each float parameter a step",
    ),
    "cmaes with a categorical": (
        lambda s: (
            s.update(algorithm="cmaes")
            or s["parameters"].append({"path": "training.scheduler", "type": "categorical", "values": ["cosine"]})
        ),
        "spec.algorithm",
        "cmaes searches float and int parameters only",
    ),
    "log and step": (
        lambda s: s["parameters"][0].update(step=1e-5),
        "spec.parameters[0].step",
        "log and step cannot be combined",
    ),
    "too many trials": (lambda s: s.update(maxTrials=201), "spec.maxTrials", "less than or equal to 200"),
    "a range that cannot fit the GPUs": (
        lambda s: (
            s["template"].update(resources={"gpusPerNode": 1, "gpuMemory": "24Gi"})
            or s["parameters"].append({"path": "training.perDeviceBatchSize", "type": "int", "min": 1, "max": 256})
            or s["template"]["training"].update(cutoffLength=4096)
        ),
        "spec.parameters",
        "training.perDeviceBatchSize = 256 will not fit the GPUs",
    ),
}
