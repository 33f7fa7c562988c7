"""validate_object: every problem, at its Kubernetes field path, with a fix; never an exception."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.render import validate_object
from tests.support.renderlib import BASE_SPEC, JobBuilder

# (id, builder, expected path, words the message must contain)
CASES: list[tuple[str, JobBuilder, str, tuple[str, ...]]] = [
    (
        "string-learning-rate",
        JobBuilder().set("spec.training.learningRate", "abc"),
        "spec.training.learningRate",
        ("number",),
    ),
    (
        "unknown-method",
        JobBuilder().set("spec.method", "lorax"),
        "spec.method",
        ("'full'", "'freeze'", "'lora'", "'qlora'"),
    ),
    (
        "quoted-integer",
        JobBuilder().set("spec.resources", {"gpusPerNode": "2"}),
        "spec.resources.gpusPerNode",
        ("integer",),
    ),
    ("quoted-bool", JobBuilder().set("spec.suspend", "yes"), "spec.suspend", ("true or false",)),
    ("missing-spec", JobBuilder().unset("spec"), "spec", ("required",)),
    ("misspelt-field", JobBuilder().set("spec.trainng", {}), "spec.trainng", ("did you mean training",)),
    ("bad-name", JobBuilder().set("metadata", {"name": "Bad_Name"}), "metadata.name", ("lower-case",)),
    ("long-name", JobBuilder().set("metadata.name", "a" * 60), "metadata.name", ("51",)),
    ("qlora-without-bits", JobBuilder().set("spec.method", "qlora"), "spec.quantization", ("bits",)),
    ("model-two-sources", JobBuilder().set("spec.model.path", "local/qwen"), "spec.model", ("exactly one",)),
    (
        "dataset-rule-field-path",
        JobBuilder().set("spec.datasets", [{"name": "a", "hub": "o/a"}, {"name": "b", "path": "x", "revision": "v1"}]),
        "spec.datasets[1].revision",
        ("needs hub",),
    ),
    (
        "dataset-path-escape",
        JobBuilder().set("spec.datasets", [{"name": "a", "path": "x/../../etc"}]),
        "spec.datasets[0].path",
        ("..",),
    ),
    (
        "dataset-path-shell",
        JobBuilder().set("spec.datasets", [{"name": "a", "path": "x; rm -rf /"}]),
        "spec.datasets[0].path",
        ("relative path",),
    ),
    (
        "reserved-env",
        JobBuilder().set("spec.env", [{"name": "HF_TOKEN", "value": "x"}]),
        "spec.env[0].name",
        ("hfTokenSecretRef",),
    ),
    (
        "template-typo",
        JobBuilder().set("spec.model.template", "qwn"),
        "spec.model.template",
        ("did you mean", "'qwen'"),
    ),
    (
        "template-unknown",
        JobBuilder().set("spec.model.template", "zzzzzz"),
        "spec.model.template",
        ("LLaMA-Factory", "template"),
    ),
    (
        "extra-controlled",
        JobBuilder().set("spec.extraArgs", {"learning_rate": 0.1}),
        "spec.extraArgs.learning_rate",
        ("spec.training.learningRate",),
    ),
    (
        "extra-controlled-deepspeed",
        JobBuilder().set("spec.extraArgs", {"deepspeed": "x.json"}),
        "spec.extraArgs.deepspeed",
        ("spec.distributed.zeroStage",),
    ),
    (
        "extra-token",
        JobBuilder().set("spec.extraArgs", {"hub_token": "hf_x"}),
        "spec.extraArgs.hub_token",
        ("hfTokenSecretRef",),
    ),
    (
        "extra-unknown",
        JobBuilder().set("spec.extraArgs", {"lora_rankk": 4}),
        "spec.extraArgs.lora_rankk",
        ("not an argument", "lora_rank"),
    ),
    (
        "lora-target-the-model-lacks",  # issue 22: validate crashed in the memory planner, render accepted it
        JobBuilder().set("spec.method", "lora").set("spec.lora", {"targetModules": ["q_proj", "wq"]}),
        "spec.lora.targetModules",
        (
            "wq is not a linear layer of Qwen/Qwen1.5-1.8B",
            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
        ),
    ),
    (
        # LLaMA-Factory expands `all` only when it is the only name (llamafactory/model/adapter.py:205 @0.9.5);
        # beside other names PEFT looks for a module called all, finds none, and stops the job at model load
        "lora-target-all-with-another-name",
        JobBuilder().set("spec.method", "lora").set("spec.lora", {"targetModules": ["all", "nonexistent"]}),
        "spec.lora.targetModules",
        ("all", "alone"),
    ),
    ("unknown-field-null", JobBuilder().set("spec.model.bogus", None), "spec.model.bogus", ("not a field",)),
    (
        "extra-wrong-type",
        JobBuilder().set("spec.extraArgs", {"neftune_noise_alpha": "loud"}),
        "spec.extraArgs.neftune_noise_alpha",
        ("number",),
    ),
    (
        "extra-int-for-bool",
        JobBuilder().set("spec.extraArgs", {"train_on_prompt": 1}),
        "spec.extraArgs.train_on_prompt",
        ("true or false",),
    ),
    ("extra-bad-type", JobBuilder().set("spec.extraArgs", {"run_name": 7}), "spec.extraArgs.run_name", ("string",)),
    (
        "extra-report-to-is-tracking",
        JobBuilder().set("spec.extraArgs", {"report_to": "wandb"}),
        "spec.extraArgs.report_to",
        ("spec.tracking",),
    ),
    (
        "fsdp-on-cpu",
        JobBuilder()
        .set("spec.distributed", {"launcher": "accelerate", "fsdp": True})
        .set("spec.resources", {"gpusPerNode": 0})
        .set("spec.training", {"precision": "fp32"}),
        "spec.distributed.fsdp",
        ("gpusPerNode",),
    ),
    (
        "extra-not-scalar",
        JobBuilder().set("spec.extraArgs", {"neftune_noise_alpha": [1]}),
        "spec.extraArgs.neftune_noise_alpha",
        ("single value",),
    ),
    # Settings whose package the default trainer image lacks: refused before any GPU time is spent.
    (
        "fa2-not-in-image",
        JobBuilder().set("spec.training.attention", "fa2"),
        "spec.training.attention",
        ("flash-attn", "spec.image"),
    ),
    (
        "fa3-not-in-image",
        JobBuilder().set("spec.training.attention", "fa3"),
        "spec.training.attention",
        ("flash-attn-3", "spec.image"),
    ),
    (
        "unsloth-not-in-image",
        JobBuilder().set("spec.extraArgs", {"use_unsloth": True}),
        "spec.extraArgs.use_unsloth",
        ("unsloth", "spec.image"),
    ),
    ("fp8-not-in-image", JobBuilder().set("spec.extraArgs", {"fp8": True}), "spec.extraArgs.fp8", ("torchao",)),
    (
        "optimizer-twice",
        JobBuilder().set("spec.training.optimizer", "adamw_torch").set("spec.extraArgs", {"optim": "adamw_8bit"}),
        "spec.extraArgs.optim",
        ("spec.training.optimizer",),
    ),
    (
        "liger-is-a-field",
        JobBuilder().set("spec.extraArgs", {"enable_liger_kernel": True}),
        "spec.extraArgs.enable_liger_kernel",
        ("spec.training.ligerKernel",),
    ),
    (
        "extra-resource-is-the-gpu",
        JobBuilder().set("spec.resources", {"gpusPerNode": 8, "extra": {"nvidia.com/gpu": 8}}),
        "spec.resources.extra",
        ("gpusPerNode",),
    ),
]


def test_a_custom_image_may_bring_flash_attention_and_the_default_image_has_liger() -> None:
    custom = (
        JobBuilder()
        .set("spec.training.attention", "fa2")
        .set("spec.image", "registry.example/trainer-fa2:1")
        .doc_copy()
    )
    assert validate_object(custom)[1] == []
    assert validate_object(JobBuilder().set("spec.training.ligerKernel", True).doc_copy())[1] == []
    assert validate_object(JobBuilder().set("spec.extraArgs", {"use_unsloth": False}).doc_copy())[1] == []


@pytest.mark.parametrize(("builder", "path", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem_points_at_field_and_fix(builder: JobBuilder, path: str, words: tuple[str, ...]) -> None:
    job, problems = validate_object(builder.doc_copy())
    assert job is None
    matching = [p for p in problems if p.path == path]
    assert matching, f"no problem at {path}: {problems}"
    text = " ".join(p.message for p in matching)
    for word in words:
        assert word in text, f"{path}: {word!r} missing from {text!r}"


def test_every_problem_is_reported_in_one_run() -> None:
    doc = (
        JobBuilder()
        .set("spec.training.learningRate", "fast")
        .set("spec.model.template", "qwn")
        .set("spec.extraArgs", {"learning_rate": 1.0, "lora_rankk": 2})
        .set("spec.datasets", [{"name": "a", "path": "ok.jsonl", "revision": "v1"}])
        .doc_copy()
    )
    _, problems = validate_object(doc)
    paths = {p.path for p in problems}
    assert {
        "spec.training.learningRate",
        "spec.model.template",
        "spec.extraArgs.learning_rate",
        "spec.extraArgs.lora_rankk",
        "spec.datasets[0].revision",
    } <= paths


def test_two_broken_rules_are_two_problems() -> None:
    doc = (
        JobBuilder()
        .set("spec.method", "full")
        .set("spec.lora", {"rank": 4})
        .set("spec.quantization", {"bits": 4})
        .doc_copy()
    )
    _, problems = validate_object(doc)
    assert {"spec.lora", "spec.quantization"} <= {p.path for p in problems}


@pytest.mark.parametrize(
    "extra",
    [
        {"run_name": "exp-1"},
        {"neftune_noise_alpha": 5},
        {"neftune_noise_alpha": 5.0},
        {"plot_loss": False},
        {"use_fast_tokenizer": True},
    ],
    ids=lambda e: next(iter(e)),
)
def test_valid_extra_args_pass(extra: dict[str, Any]) -> None:
    job, problems = validate_object(JobBuilder().set("spec.extraArgs", extra).doc_copy())
    assert problems == [] and job is not None


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "FineTuneJob",
        5,
        1.5,
        True,
        {"kind": "FineTuneJob"},
        {"spec": []},
        {"metadata": "x", "spec": {"model": 3}},
    ],
)
def test_malformed_documents_give_problems_not_exceptions(value: Any) -> None:
    job, problems = validate_object(value)
    assert job is None and problems
    assert all(isinstance(p.message, str) and p.message for p in problems)


def test_wrong_api_version_and_kind() -> None:
    doc = JobBuilder().set("apiVersion", "kubetune.io/v1").set("kind", "Job").doc_copy()
    _, problems = validate_object(doc)
    assert {"apiVersion", "kind"} <= {p.path for p in problems}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_paths = st.sampled_from(
    [
        "spec",
        "spec.model",
        "spec.model.template",
        "spec.datasets",
        "spec.method",
        "spec.training",
        "spec.training.epochs",
        "spec.resources",
        "spec.distributed",
        "spec.extraArgs",
        "spec.env",
        "spec.scheduling",
        "spec.storage",
        "metadata",
        "metadata.name",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=_paths, value=_json)
def test_never_raises_on_any_mutation(path: str, value: Any) -> None:
    job, problems = validate_object(JobBuilder(BASE_SPEC).set(path, value).doc_copy())
    assert (job is None) == bool(problems)
    for p in problems:
        assert p.message and "could not validate" not in p.message, p


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "hint"),
    [
        ("spec.extraArgs", {"Bad-Key": 1}, "spec.extraArgs.Bad-Key", "snake_case"),
        ("spec.model", {"name": "a b", "template": "qwen"}, "spec.model.name", "Hub id"),
        ("spec.storage", {"outputs": {"claimName": "A_b"}}, "spec.storage.outputs.claimName", "Kubernetes name"),
        ("spec.datasets", [{"name": "x", "url": "ftp://x"}], "spec.datasets[0].url", "http(s)"),
    ],
    ids=["extra-key", "hub-id", "claim-name", "url"],
)
def test_pattern_errors_explain_the_expected_form(path: str, value: Any, expected_path: str, hint: str) -> None:
    _, problems = validate_object(JobBuilder().set(path, value).doc_copy())
    assert [p.path for p in problems] == [expected_path]
    assert hint in problems[0].message


@pytest.mark.parametrize(
    "targets",
    [["q_proj", "v_proj"], ["all"], ["self_attn.q_proj", "mlp.down_proj"], ["model.layers.0.self_attn.o_proj"]],
    ids=["names", "all", "dotted-suffixes", "full-path"],
)
def test_lora_targets_peft_finds_are_accepted_and_planned(targets: list[str]) -> None:
    """PEFT matches a target by the module's full name or by a ``.``-suffix of it (peft/tuners/tuners_utils.py:1682-1686
    @0.18.1, check_target_module_exists), so ``self_attn.q_proj`` names every layer's q_proj: validate and render
    accept it, and the memory planner estimates it instead of failing."""
    from kubetune.plan.arch import resolve
    from kubetune.plan.feasibility import setup_from_job
    from kubetune.plan.memory import estimate

    job, problems = validate_object(
        JobBuilder().set("spec.method", "lora").set("spec.lora", {"targetModules": targets}).doc_copy()
    )
    assert problems == [] and job is not None
    assert estimate(resolve(job.spec.model.name), setup_from_job(job)).total > 0


def test_the_api_servers_managed_fields_are_not_held_against_the_job() -> None:
    """A job read from the API server carries metadata.managedFields, one level deeper than each
    spec field it records; a valid job whose record passes the depth bound is still valid."""
    doc = JobBuilder().doc_copy()
    record: dict[str, Any] = {}
    for _ in range(70):  # deeper than safeyaml.MAX_DEPTH (64)
        record = {"f:nodeAffinity": record}
    doc["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": record}}
    ]
    job, problems = validate_object(doc)
    assert problems == [] and job is not None


def _lora_doc(model: str, targets: list[str]) -> dict[str, Any]:
    return (
        JobBuilder()
        .set("spec.model.name", model)
        .set("spec.method", "lora")
        .set("spec.lora", {"targetModules": targets})
        .doc_copy()
    )


@pytest.mark.parametrize(
    ("model", "targets", "refused"),
    [
        # Phi-3/4 fuse the projections (transformers/models/phi3/modeling_phi3.py:54-55,223-224 @5.6.0):
        # PEFT finds no q_proj there and stops the job at model load.
        (
            "microsoft/Phi-3-mini-4k-instruct",
            ["q_proj", "v_proj"],
            "q_proj, v_proj are not linear layers of microsoft/Phi-3-mini-4k-instruct",
        ),
        ("microsoft/Phi-3-mini-4k-instruct", ["qkv_proj", "gate_up_proj"], None),
        ("Qwen/Qwen2.5-1.5B-Instruct", ["qkv_proj"], "qkv_proj is not a linear layer of Qwen/Qwen2.5-1.5B-Instruct"),
        # PEFT puts LoRA on the embedding and the output layer too (peft/tuners/lora/layer.py:2241-2274 @0.18.1).
        ("Qwen/Qwen2.5-7B-Instruct", ["q_proj", "lm_head", "embed_tokens"], None),
        # ...but not where one matrix is both (tie_word_embeddings): merging the adapter changes both layers.
        (
            "Qwen/Qwen2.5-1.5B-Instruct",
            ["q_proj", "lm_head", "embed_tokens"],
            "lm_head, embed_tokens: Qwen/Qwen2.5-1.5B-Instruct ties embed_tokens and lm_head",
        ),
        ("meta-llama/Llama-3.2-1B", ["embed_tokens"], "ties embed_tokens and lm_head"),
    ],
)
def test_lora_targets_are_the_models_own_module_names(model: str, targets: list[str], refused: str | None) -> None:
    problems = [p for p in validate_object(_lora_doc(model, targets))[1] if p.path == "spec.lora.targetModules"]
    if refused is None:
        assert problems == []
    else:
        assert len(problems) == 1 and refused in problems[0].message, problems


def test_lora_on_lm_head_and_embeddings_counts_their_adapter_parameters() -> None:
    from kubetune.plan.arch import resolve  # noqa: PLC0415
    from kubetune.plan.feasibility import setup_from_job  # noqa: PLC0415
    from kubetune.plan.memory import trainable_params  # noqa: PLC0415

    arch = resolve("Qwen/Qwen2.5-7B-Instruct")
    plain, with_outer = (
        validate_object(_lora_doc(arch.name, t))[0] for t in (["q_proj"], ["q_proj", "lm_head", "embed_tokens"])
    )
    assert plain is not None and with_outer is not None and plain.spec.lora is not None
    grown = trainable_params(arch, setup_from_job(with_outer)) - trainable_params(arch, setup_from_job(plain))
    assert grown == 2 * plain.spec.lora.rank * (arch.vocab + arch.hidden)


def _merged_logits_gap(target: str) -> float:
    """How far a merged model's logits are from base + adapter, on a tiny tied-embedding Qwen2 with
    LoRA (B non-zero) on ``target`` only: what spec.export and a job chained on this one serve."""
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=64,
        tie_word_embeddings=True,
    )
    model = get_peft_model(
        Qwen2ForCausalLM(config).eval(), LoraConfig(target_modules=[target], r=4, init_lora_weights=False)
    )
    tokens = torch.randint(0, 64, (1, 8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's own warning about tied modules: a warning only
        adapted = model(tokens).logits
        merged = model.merge_and_unload()(tokens).logits
    return float((adapted - merged).abs().max())


@pytest.mark.train
@pytest.mark.parametrize("target", ["embed_tokens", "lm_head"])
def test_lora_on_a_tied_embedding_is_refused_because_the_merged_model_differs(target: str) -> None:
    """The reason for the refusal, measured with PEFT itself: merging LoRA on embed_tokens or lm_head
    of a tied model is not the trained model (and the catalogue's tied models are refused for it)."""
    assert _merged_logits_gap(target) > 1.0
    problems = [
        p for p in validate_object(_lora_doc("Qwen/Qwen2.5-0.5B", [target]))[1] if p.path == "spec.lora.targetModules"
    ]
    assert len(problems) == 1 and "tie_word_embeddings" in problems[0].message


@pytest.mark.parametrize(
    ("model", "export", "refused"),
    [
        # vLLM's Qwen2ForCausalLM has no embedding_modules: it refuses the adapter at load (startup).
        ("Qwen/Qwen2.5-7B-Instruct", False, True),
        ("Qwen/Qwen3-8B", False, True),
        # LlamaForCausalLM lists embed_tokens and lm_head (vllm/model_executor/models/llama.py:493-497 @0.11.0).
        ("meta-llama/Llama-3.1-8B", False, False),
        ("mistralai/Mistral-7B-v0.3", False, False),
        # The merged model is served: no adapter for vLLM to load.
        ("Qwen/Qwen2.5-7B-Instruct", True, False),
    ],
)
def test_an_adapter_vllm_cannot_load_is_not_served(model: str, export: bool, refused: bool) -> None:
    doc = (
        JobBuilder()
        .set("spec.model.name", model)
        .set("spec.method", "lora")
        .set("spec.lora", {"targetModules": ["q_proj", "lm_head"]})
    )
    doc = doc.set("spec.serve", {"engine": "vllm"}).set("spec.export", {"enabled": export}).doc_copy()
    problems = [p for p in validate_object(doc)[1] if p.path == "spec.lora.targetModules"]
    if refused:
        assert len(problems) == 1 and "vLLM" in problems[0].message and "spec.export.enabled" in problems[0].message, (
            problems
        )
    else:
        assert problems == [], problems


def test_lm_head_lora_with_liger_fused_loss_is_refused() -> None:
    """Liger's fused cross-entropy reads lm_head.weight, the base weight under PEFT: the adapter there
    would never be trained (pt/sft; other stages keep the logits and the LoRA)."""

    def problems(stage: str, liger: bool, targets: list[str]) -> list[Any]:
        doc = _lora_doc("Qwen/Qwen2.5-7B-Instruct", targets)
        doc["spec"].setdefault("training", {}).update(stage=stage, ligerKernel=liger)
        return [p for p in validate_object(doc)[1] if p.path == "spec.lora.targetModules"]

    refused = problems("sft", True, ["q_proj", "lm_head"])
    assert len(refused) == 1 and "ligerKernel" in refused[0].message, refused
    assert problems("sft", False, ["q_proj", "lm_head"]) == []
    assert problems("sft", True, ["q_proj", "embed_tokens"]) == []
