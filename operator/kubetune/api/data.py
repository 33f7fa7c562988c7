"""spec.datasets and spec.evaluation: training and evaluation data.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from .base import (
    ApiModel,
    HubId,
    Identifier,
    RelativePath,
    Rule,
    RuledModel,
    one_of_rule,
)
from .objectstore import ObjectUri, uri_rules
from .fields import (
    _NO_DOTDOT,
    Count64,
    _no_dotdot,
)

# --- datasets -----------------------------------------------------------------

LOOPBACK_HTTP = r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/.*)?$"
"""An http:// address on this machine: nothing on the way to alter it."""


class DatasetColumns(ApiModel):
    """Which keys of each record hold what, as in LLaMA-Factory's `dataset_info.json` `columns`.

    ShareGPT uses messages/system/tools; Alpaca uses prompt/query/response/history/system.
    Unset keys take LLaMA-Factory's defaults (`conversations`, `instruction`, `input`, `output`).
    """

    messages: Identifier | None = None
    """ShareGPT: the list of turns (LLaMA-Factory default `conversations`)."""
    system: Identifier | None = None
    """System prompt column (both formats)."""
    tools: Identifier | None = None
    """ShareGPT: tool descriptions column."""
    prompt: Identifier | None = None
    """Alpaca: the instruction column (LLaMA-Factory default `instruction`). For stage pt: the text column."""
    query: Identifier | None = None
    """Alpaca: the optional input column (LLaMA-Factory default `input`)."""
    response: Identifier | None = None
    """Alpaca: the answer column (LLaMA-Factory default `output`)."""
    history: Identifier | None = None
    """Alpaca: earlier turns as [instruction, answer] pairs."""
    chosen: Identifier | None = None
    (
        "Ranking datasets: the preferred answer (Alpaca: a string; ShareGPT: "
        "one turn object). Default `chosen` when ranking."
    )
    rejected: Identifier | None = None
    (
        "Ranking datasets: the dispreferred answer (Alpaca: a string; ShareGPT: "
        "one turn object). Default `rejected` when ranking."
    )
    kto_tag: Identifier | None = None
    (
        "Stage kto: the boolean label column, true for a desirable answer (LLaMA-Factory's "
        "`kto_tag`). Required for stage kto."
    )


class ShareGPTTags(ApiModel):
    """How turns are labelled inside a ShareGPT record (LLaMA-Factory's `tags`)."""

    role_tag: Identifier | None = None
    """Key of a turn's role (LLaMA-Factory default `from`)."""
    content_tag: Identifier | None = None
    """Key of a turn's text (LLaMA-Factory default `value`)."""
    user_tag: Identifier | None = None
    """Role value of a user turn (default `human`)."""
    assistant_tag: Identifier | None = None
    """Role value of a model turn (default `gpt`)."""
    observation_tag: Identifier | None = None
    """Role value of a tool result (default `observation`)."""
    function_tag: Identifier | None = None
    """Role value of a tool call (default `function_call`)."""
    system_tag: Identifier | None = None
    """Role value of a system turn (default `system`)."""


_ALPACA_ONLY = ("prompt", "query", "response", "history")
_SHAREGPT_ONLY = ("messages", "tools")


class DatasetSpec(RuledModel):
    """One training dataset: where it comes from and how its records map to LLaMA-Factory's format."""

    name: Identifier
    """Key of the dataset in the generated dataset_info.json (LLaMA-Factory's `dataset`); unique within the job."""

    hub: HubId | None = None
    """Hugging Face Hub dataset id, e.g. `hkust-nlp/deita-10k-v0`. Exactly one of hub, path, url or uri."""

    path: RelativePath | None = None
    """JSON/JSONL file or folder on the datasets volume (spec.storage.datasets), relative to its subPath."""

    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f'\"`$\\]+$")] | None = None
    (
        "HTTPS address of a JSON/JSONL file, downloaded once per job by the trainer (verified against the system CAs "
        "and spec.storage.objectStore.caBundle). `http://` only with sha256, "
        "or on a loopback host (`kubetune run --local`)."
    )

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Hex SHA-256 of the file at url: the trainer refuses a download with another digest. Only with url."""

    uri: ObjectUri | None = None
    (
        "s3:// object (`s3://bucket/data/train.jsonl`) or key prefix ending in '/' (every "
        ".json/.jsonl/.parquet/.csv/.arrow object under it becomes one dataset), "
        "downloaded once per job by the trainer; gs:// for Google Cloud Storage (S3-compatible XML API, HMAC key); "
        "az://<container>/<path> for Azure Blob Storage (the account from spec.storage.objectStore); "
        "the store is spec.storage.objectStore."
    )

    split: Identifier = "train"
    """Dataset split to train on (Hub datasets)."""

    subset: Identifier | None = None
    """Hub dataset configuration name, when it has several."""

    revision: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9_.\-/]+$")] | None = None
    """Hub revision to pin; only with hub."""

    format: Literal["sharegpt", "alpaca"] = "sharegpt"
    """Record layout: `sharegpt` (multi-turn conversations) or `alpaca` (instruction/input/output)."""

    columns: DatasetColumns | None = None
    """Column mapping; see DatasetColumns."""

    tags: ShareGPTTags | None = None
    """Turn labels for ShareGPT records, e.g. from/value/human/gpt as in the deita-10k data."""

    max_samples: Count64 | None = None
    (
        "Use at most this many records of this dataset: a random subset when it has more, "
        "every record once when it has fewer (LLaMA-Factory's `num_samples`, "
        "which the trainer caps at the record count because LLaMA-Factory would otherwise repeat records to reach it)."
    )

    ranking: bool = False
    (
        "Preference pairs (LLaMA-Factory's `ranking`): each record has a prompt plus a chosen and a rejected answer "
        "(columns.chosen / columns.rejected). For stages rm and dpo (including the orpo and simpo losses)."
    )

    rules = (
        one_of_rule(
            "dataset-one-source",
            ("hub", "path", "url", "uri"),
            "spec.datasets[]: set exactly one of hub (a Hub dataset id), "
            "path (a file on the datasets volume), url or uri (an s3:// object or prefix)",
        ),
        *uri_rules("spec.datasets[].uri"),
        Rule(
            name="dataset-sha256-needs-url",
            cel="!has(self.sha256) || has(self.url)",
            message="spec.datasets[].sha256 pins the file at url: remove it, or set url",
            field_path=".sha256",
            check=lambda d: d.sha256 is None or d.url is not None,
        ),
        Rule(
            name="dataset-url-https",
            cel="!has(self.url) || self.url.startsWith('https://') || has(self.sha256) || self.url.matches('"
            + LOOPBACK_HTTP.replace("\\", "\\\\")
            + "')",
            message="spec.datasets[].url: plain http:// can be altered on the way; use https://, "
            "or pin the file with spec.datasets[].sha256 (http:// on 127.0.0.1/localhost is "
            "accepted for kubetune run --local)",
            field_path=".url",
            check=lambda d: (
                d.url is None
                or d.url.startswith("https://")
                or d.sha256 is not None
                or re.match(LOOPBACK_HTTP, d.url) is not None
            ),
        ),
        Rule(
            name="dataset-revision-needs-hub",
            cel="!has(self.revision) || has(self.hub)",
            message="spec.datasets[].revision pins a Hub revision and needs hub; "
            "remove it for path, url or uri datasets",
            field_path=".revision",
            check=lambda d: d.revision is None or d.hub is not None,
        ),
        Rule(
            name="dataset-path-inside-volume",
            cel="!has(self.path) || " + _NO_DOTDOT.replace("self", "self.path"),
            message="spec.datasets[].path must stay inside the datasets volume: remove '..' segments",
            field_path=".path",
            check=lambda d: _no_dotdot(d.path),
        ),
        Rule(
            name="alpaca-has-no-tags",
            cel="self.format != 'alpaca' || !has(self.tags)",
            message="spec.datasets[].tags only apply to format sharegpt; remove tags or set format: sharegpt",
            field_path=".tags",
            check=lambda d: d.format != "alpaca" or d.tags is None,
        ),
        Rule(
            name="alpaca-columns",
            cel="self.format != 'alpaca' || !has(self.columns) || "
            "(!has(self.columns.messages) && !has(self.columns.tools))",
            message="spec.datasets[].columns.messages/tools are ShareGPT columns; "
            "with format alpaca use prompt/query/response/history",
            field_path=".columns",
            check=lambda d: (
                d.format != "alpaca" or d.columns is None or all(getattr(d.columns, c) is None for c in _SHAREGPT_ONLY)
            ),
        ),
        Rule(
            name="sharegpt-columns",
            cel="self.format != 'sharegpt' || !has(self.columns) || (!has(self.columns.prompt) && "
            "!has(self.columns.query) && !has(self.columns.response) && !has(self.columns.history))",
            message="spec.datasets[].columns.prompt/query/response/history are Alpaca columns; "
            "with format sharegpt use messages/system/tools",
            field_path=".columns",
            check=lambda d: (
                d.format != "sharegpt" or d.columns is None or all(getattr(d.columns, c) is None for c in _ALPACA_ONLY)
            ),
        ),
        Rule(
            name="chosen-rejected-need-ranking",
            cel="self.ranking || !has(self.columns) || (!has(self.columns.chosen) && !has(self.columns.rejected))",
            message="spec.datasets[].columns.chosen/rejected name preference pairs: set ranking: "
            "true (stages rm, dpo) or remove them",
            field_path=".columns",
            check=lambda d: d.ranking or d.columns is None or (d.columns.chosen is None and d.columns.rejected is None),
        ),
    )


class EvaluationSpec(RuledModel):
    """Evaluate the trained model after training (and export): eval loss, perplexity, optionally BLEU-4/ROUGE."""

    val_size: Annotated[float, Field(gt=0, lt=1)] | None = None
    (
        "Hold out this fraction of the training data (never trained on; LLaMA-Factory's `val_size`, "
        "same seed). Exactly one of valSize or datasets."
    )
    datasets: Annotated[list[DatasetSpec], Field(min_length=1, max_length=16)] | None = None
    (
        "Held-out datasets, described like spec.datasets[] (LLaMA-Factory's `eval_dataset`); "
        "names unique across both lists."
    )
    max_samples: Annotated[int, Field(ge=1)] | None = None
    (
        "Evaluate on at most this many records per dataset (with datasets only: "
        "with valSize the held-out set is that fraction of the training data; lower valSize instead)."
    )
    generation: bool = False
    (
        "Also generate answers and score them against the references with BLEU-4 and ROUGE-1/2/L (LLaMA-Factory's "
        "predict mode; stage sft only)."
    )
    max_new_tokens: Annotated[int, Field(ge=1, le=65536)] = 1024
    (
        "Longest generated answer in generation mode (`max_new_tokens`); default 1024 as LLaMA-Factory's, "
        "so a long reference answer is not cut short and scored low (generation stops at the end-of-turn token anyway)."
    )
    base_model: bool = False
    (
        "Evaluate the base model the same way, so status shows the difference (QLoRA: "
        "the base is loaded quantized like the trained model; not for dpo/kto with a reference model, "
        "where the starting model's loss is fixed by definition, nor for rm, where the base model has no value head)."
    )

    rules = (
        Rule(
            name="evaluation-one-source",
            cel="has(self.valSize) != has(self.datasets)",
            message="spec.evaluation: set exactly one of valSize (a held-out fraction of the training data) "
            "or datasets (held-out datasets)",
            check=lambda e: (e.val_size is None) != (e.datasets is None),
        ),
        Rule(
            name="evaluation-max-samples-needs-datasets",
            cel="!has(self.maxSamples) || has(self.datasets)",
            message="spec.evaluation.maxSamples limits evaluation.datasets; with valSize the held-out records are "
            "that fraction of the training data (LLaMA-Factory splits after spec.training.maxSamples): "
            "lower valSize or remove maxSamples",
            field_path=".maxSamples",
            check=lambda e: e.max_samples is None or e.datasets is not None,
        ),
    )
