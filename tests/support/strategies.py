"""Hypothesis strategies for FineTuneJob documents the models accept.

Built field by field from the API's rules (rather than filtering random
documents) so most draws are valid and the properties test the renderer, not
the filter.  Free-text fields get hostile strings (quotes, newlines, ``$(...)``,
``{{ }}``) so the same draws double as injection tests.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

HOSTILE = st.sampled_from(
    [
        'say "hi"',
        "line1\nline2: value\n- item",
        "$(rm -rf /)",
        "`id`",
        "{{ plan.name }}",
        "{% raw %}x",
        "'; kubectl delete ns default; '",
        "key: value",
        "&anchor *alias !!python/object:os.system",
        "# not a comment",
        "\t tab \r\n crlf \x85 nel \u2028 ls",
        "",
        "null",
        "0o17",
        "1e5",
    ]
)
# NUL (no environment or file can hold it), lone UTF-16 surrogates (not text in UTF-8) and
# OmegaConf's "${" are refused by validation (tests/render/test_hostile_render.py); every other
# text must survive.
FREE_TEXT = HOSTILE | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
).filter(lambda s: "${" not in s)

_ident = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
_hub = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}/[A-Za-z][A-Za-z0-9._-]{0,12}", fullmatch=True)
_relpath = st.from_regex(r"[a-z][a-z0-9_]{0,8}(/[a-z0-9_]{1,8}){0,2}\.jsonl", fullmatch=True)
_dns = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def datasets(draw: st.DrawFn, stage: str) -> list[dict[str, Any]]:
    names = draw(st.lists(_ident, min_size=1, max_size=3, unique=True))
    out = []
    for name in names:
        fmt = "alpaca" if stage == "pt" else draw(st.sampled_from(["sharegpt", "alpaca"]))
        ds: dict[str, Any] = {"name": name, "format": fmt}
        source = draw(st.sampled_from(["hub", "path", "url"]))
        if source == "hub":
            ds["hub"] = draw(_hub)
            if draw(st.booleans()):
                ds["revision"] = draw(st.sampled_from(["main", "v1.0", "abc123"]))
        elif source == "path":
            ds["path"] = draw(_relpath)
        else:
            ds["url"] = "https://example.com/" + draw(_relpath)
        if fmt == "sharegpt" and draw(st.booleans()):
            ds["columns"] = {"messages": draw(_ident)}
            ds["tags"] = {"roleTag": "from", "contentTag": "value", "userTag": "human", "assistantTag": "gpt"}
        if fmt == "alpaca" and draw(st.booleans()):
            ds["columns"] = {"prompt": draw(_ident), "response": draw(_ident)}
        if draw(st.booleans()):
            ds["maxSamples"] = draw(st.integers(1, 10**6))
        out.append(ds)
    return out


@st.composite
def finetune_jobs(draw: st.DrawFn) -> dict[str, Any]:
    stage = draw(st.sampled_from(["sft", "sft", "pt"]))
    method = draw(st.sampled_from(["full", "freeze", "lora", "qlora"]))
    gpus = draw(st.sampled_from([0, 1, 2, 8]))
    nodes = draw(st.integers(1, 4))
    backend = draw(st.sampled_from(["pytorchjob", "mpijob"]))
    zero = draw(st.integers(0, 3)) if gpus else 0
    if backend == "mpijob":
        launcher = draw(st.sampled_from([None, "deepspeed"]))
    elif zero:
        launcher = draw(st.sampled_from([None, "deepspeed", "accelerate"]))
    else:
        launcher = draw(st.sampled_from([None, "torchrun", "deepspeed", "accelerate"]))
    fsdp = launcher == "accelerate" and zero == 0 and draw(st.booleans())
    offload = "none"
    if zero >= 2:
        offload = draw(st.sampled_from(["none", "optimizer"] + (["all"] if zero == 3 else [])))

    spec: dict[str, Any] = {
        "model": draw(
            st.one_of(
                st.fixed_dictionaries({"name": _hub}, optional={"revision": st.just("main")}),
                st.fixed_dictionaries({"path": _relpath.map(lambda p: p.removesuffix(".jsonl"))}),
            )
        )
        | {
            "template": draw(st.sampled_from(["qwen", "llama3", "mistral", "default", "chatml"])),
            "trustRemoteCode": draw(st.booleans()),
        },
        "datasets": draw(datasets(stage)),
        "method": method,
        "resources": {"nodes": nodes, "gpusPerNode": gpus},
        "distributed": {"backend": backend, "zeroStage": zero, "offload": offload, "fsdp": fsdp},
        "training": {
            "stage": stage,
            "precision": draw(st.sampled_from(["bf16", "fp16", "fp32"])) if gpus else "fp32",
            "learningRate": draw(st.floats(1e-7, 1e-2)),
            "epochs": draw(st.floats(0.1, 10)),
            "perDeviceBatchSize": draw(st.integers(1, 16)),
            "gradientAccumulationSteps": draw(st.integers(1, 16)),
            "cutoffLength": draw(st.integers(8, 8192)),
            "gradientCheckpointing": draw(st.booleans()),
        },
        "storage": {"outputs": {"claimName": draw(_dns)}},
        "suspend": draw(st.booleans()),
    }
    if launcher:
        spec["distributed"]["launcher"] = launcher
    t = spec["training"]
    if draw(st.booleans()):
        t["maxSteps"] = draw(st.integers(1, 10000))
    if draw(st.booleans()):
        t["optimizer"] = draw(st.sampled_from(["adamw_torch_fused", "adamw_torch"]))
    if draw(st.booleans()):
        t["warmupRatio"] = draw(st.floats(0, 0.5))
    if draw(st.booleans()):
        t["valSize"] = draw(st.floats(0.01, 0.5))
        if draw(st.booleans()):
            t["evalSteps"] = draw(st.integers(1, 1000))
    if method in ("lora", "qlora") and draw(st.booleans()):
        spec["lora"] = {
            "rank": draw(st.integers(1, 64)),
            "targetModules": draw(st.lists(_ident, min_size=1, max_size=3)),
        }
    if method == "freeze" and draw(st.booleans()):
        spec["freeze"] = {"trainableLayers": draw(st.integers(-8, 8))}
    if method == "qlora":
        bits = 4 if zero == 3 or fsdp else draw(st.sampled_from([4, 8]))
        spec["quantization"] = {"bits": bits}
    if method in ("lora", "qlora") and draw(st.booleans()):
        spec["export"] = {"enabled": True}
    if draw(st.booleans()):
        spec["storage"]["datasets"] = {"claimName": draw(_dns), "readOnly": True, "subPath": draw(_relpath)}
    if draw(st.booleans()):
        spec["env"] = [{"name": f"USER_VAR_{i}", "value": draw(FREE_TEXT)} for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        spec["hfTokenSecretRef"] = {"name": draw(_dns)}
    if draw(st.booleans()):
        spec["scheduling"] = {"queueName": draw(_dns), "nodeSelector": {"example.com/pool": draw(_dns)}}
    if draw(st.booleans()):
        spec["extraArgs"] = {"run_name": draw(FREE_TEXT), "neftune_noise_alpha": draw(st.floats(0.1, 10))}
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": draw(_dns), "namespace": draw(_dns)},
        "spec": spec,
    }
