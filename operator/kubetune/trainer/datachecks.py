"""Dataset checks: every record validated against LLaMA-Factory's Alpaca and ShareGPT layouts
(the run record, ``kubetune-run.json``, is :mod:`.record`).

LLaMA-Factory silently drops records it cannot convert ("Dropped invalid
example") and then may train on a fraction of the data, or fail much later
with "Cannot find valid samples".  We check every record before the job
spends GPU time, against the same column and tag mapping LLaMA-Factory will
use (the dataset_info.json entry), and name the dataset, the record index and
the field of each problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.api import contract

ALPACA_DEFAULTS = contract.LF_ALPACA_COLUMNS
SHAREGPT_DEFAULT_MESSAGES = contract.LF_SHAREGPT_COLUMNS["messages"]
TAG_DEFAULTS = contract.LF_SHAREGPT_TAGS


_COLUMNS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected", "kto_tag")


def lf_columns(entry: Mapping[str, Any]) -> dict[str, str | None]:
    """The columns LLaMA-Factory reads for a dataset_info.json entry.

    DatasetAttr.join (src/llamafactory/data/parser.py:72-84 @v0.9.5): when the entry has
    "columns", *every* column is taken from it with default None (the class defaults
    ``instruction``/``input``/``output``/``conversations`` then vanish); without it the
    class defaults hold (parser.py:47-56: chosen/rejected/kto_tag default None)."""
    if "columns" in entry:
        given = entry.get("columns") or {}
        return {k: given.get(k) for k in _COLUMNS}
    return {**dict.fromkeys(_COLUMNS), **ALPACA_DEFAULTS, "messages": SHAREGPT_DEFAULT_MESSAGES}


def lf_tags(entry: Mapping[str, Any]) -> dict[str, str | None]:
    """The ShareGPT tags LLaMA-Factory reads: like lf_columns (parser.py:86-89 @v0.9.5)."""
    if "tags" in entry:
        given = entry.get("tags") or {}
        return {k: given.get(k) for k in TAG_DEFAULTS}
    return dict(TAG_DEFAULTS)


@dataclass(frozen=True)
class RecordProblem:
    dataset: str
    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"dataset {self.dataset!r}, record {self.index}, field {self.field!r}: {self.message}"


class RecordChecker:
    """Checks records of one dataset, as described by its dataset_info.json entry."""

    def __init__(self, dataset: str, entry: Mapping[str, Any], *, stage: str = "sft") -> None:
        self.dataset = dataset
        self.formatting = str(entry.get("formatting", "alpaca"))
        self.stage = stage
        self.ranking = bool(entry.get("ranking", False))
        columns = lf_columns(entry)
        # Post-training columns are checked on their own (not part of the prompt/answer layout).
        self.chosen = columns.pop("chosen") if self.ranking else None
        self.rejected = columns.pop("rejected") if self.ranking else None
        self.kto_tag = columns.pop("kto_tag", None)
        if self.formatting == "sharegpt":
            self.columns = {k: v for k, v in columns.items() if k in ("messages", "system", "tools")}
        else:
            self.columns = {
                k: v for k, v in columns.items() if k in ("prompt", "query", "response", "history", "system")
            }
        self._named = dict(self.columns)  # what LLaMA-Factory's converter reads (unused_columns)
        if self.formatting != "sharegpt" and stage == "pt":
            # Pre-training reads only the text column (LLaMA-Factory's `prompt`).
            self.columns = {"prompt": self.columns.get("prompt")}
        self._seen: set[str] = set()
        # A tag LLaMA-Factory reads as None matches no turn: "" does the same here.
        self.tags: dict[str, str] = {k: v if v is not None else "" for k, v in lf_tags(entry).items()}

    def check(self, index: int, record: Any) -> list[RecordProblem]:
        """Every problem of one record (empty when LLaMA-Factory will use it as intended)."""
        if not isinstance(record, dict):
            return [self._problem(index, "<record>", f"expected a JSON object, got {type(record).__name__}")]
        self._seen.update(record)
        out = (
            self._check_sharegpt(index, record) if self.formatting == "sharegpt" else self._check_alpaca(index, record)
        )
        if self.kto_tag is not None:
            label = record.get(self.kto_tag)
            if not isinstance(label, bool):
                # LLaMA-Factory would silently train such a record as plain SFT data.
                got = "missing" if self.kto_tag not in record else f"got {type(label).__name__} {label!r}"
                out.append(
                    self._problem(
                        index, self.kto_tag, f"the KTO label must be true (desirable) or false (undesirable); {got}"
                    )
                )
        return out

    def unused_columns(self) -> list[str]:
        """Optional columns (LLaMA-Factory's names, e.g. ``query``) that the mapping names but no
        record has; call after every record was checked.

        LLaMA-Factory's converters index each named column of every example
        (``example[self.dataset_attr.query]``, src/llamafactory/data/converter.py:88-129 @v0.9.5).
        The datasets library gives a key missing from some JSON records the value None, but a
        key missing from all of them is no column at all: KeyError once training has started.
        kubetune always names the defaults (query `input`, response `output`), so the trainer
        leaves such a column out of the dataset_info.json LLaMA-Factory reads: nothing is lost,
        no record had it. Required columns (prompt, the answer, chosen/rejected, the KTO label)
        are reported per record instead."""
        required = {"prompt", "messages"}
        if self.stage != "pt" and not self.ranking:
            required.add("response")
        return [
            role
            for role, key in self._named.items()
            if key is not None and role not in required and key not in self._seen
        ]

    def _check_pair(self, index: int, record: dict[str, Any]) -> list[RecordProblem]:
        """The chosen and rejected answers of a ranking record."""
        out: list[RecordProblem] = []
        for role, key in (("chosen", self.chosen), ("rejected", self.rejected)):
            if key is None:
                out.append(
                    self._problem(
                        index, f"columns.{role}", f"dataset_info.json names no {role} column for this ranking dataset"
                    )
                )
                continue
            value = record.get(key)
            if value is None:
                out.append(
                    self._problem(
                        index,
                        key,
                        "missing (ranking datasets need a chosen and a rejected answer; "
                        f"present keys: {sorted(record)})",
                    )
                )
            elif self.formatting == "alpaca":
                if not isinstance(value, str):
                    out.append(self._problem(index, key, f"expected a string answer, got {type(value).__name__}"))
                elif not value.strip():
                    out.append(self._problem(index, key, "empty answer"))
            else:
                t = self.tags
                answer_side = (t["assistant_tag"], t["function_tag"])
                if not isinstance(value, dict):
                    out.append(
                        self._problem(
                            index,
                            key,
                            f"expected one turn object ({t['role_tag']}/{t['content_tag']}), "
                            f"got {type(value).__name__}",
                        )
                    )
                    continue
                if value.get(t["role_tag"]) not in answer_side:
                    out.append(
                        self._problem(
                            index,
                            f"{key}.{t['role_tag']}",
                            f"expected an answer role ({'/'.join(answer_side)}), got {value.get(t['role_tag'])!r}",
                        )
                    )
                if not isinstance(value.get(t["content_tag"]), str):
                    out.append(self._problem(index, f"{key}.{t['content_tag']}", "missing or not a string"))
        return out

    def _problem(self, index: int, field: str, message: str) -> RecordProblem:
        return RecordProblem(self.dataset, index, field, message)

    def _check_alpaca(self, index: int, record: dict[str, Any]) -> list[RecordProblem]:
        out: list[RecordProblem] = []
        needs_response = self.stage != "pt" and not self.ranking
        for role, required in (("prompt", True), ("response", needs_response), ("query", False), ("system", False)):
            key = self.columns.get(role)
            if key is None:
                if required:
                    # LLaMA-Factory would read this column as None (see lf_columns) and drop the record.
                    out.append(
                        self._problem(
                            index, f"columns.{role}", f"dataset_info.json names no {role} column for this dataset"
                        )
                    )
                continue
            if key not in record or record[key] is None:
                if required:
                    out.append(
                        self._problem(index, key, f"missing (the {role} column; present keys: {sorted(record)})")
                    )
                continue
            if not isinstance(record[key], str):
                out.append(self._problem(index, key, f"expected a string, got {type(record[key]).__name__}"))
        prompt_key = self.columns.get("prompt")
        if prompt_key and isinstance(record.get(prompt_key), str) and not record[prompt_key].strip():
            query_key = self.columns.get("query")
            if not (query_key and isinstance(record.get(query_key), str) and record[query_key].strip()):
                out.append(self._problem(index, prompt_key, "empty (the prompt and the query are both empty)"))
        history_key = self.columns.get("history")
        if history_key and record.get(history_key) is not None:
            history = record[history_key]
            if not isinstance(history, list):
                out.append(self._problem(index, history_key, "expected a list of [instruction, answer] pairs"))
            else:
                for i, pair in enumerate(history):
                    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                        out.append(
                            self._problem(index, f"{history_key}[{i}]", "expected [instruction, answer] (two strings)")
                        )
        if self.ranking:
            out.extend(self._check_pair(index, record))
        return out

    def _check_sharegpt(self, index: int, record: dict[str, Any]) -> list[RecordProblem]:
        key = self.columns.get("messages")
        if key is None:
            return [
                self._problem(index, "columns.messages", "dataset_info.json names no messages column for this dataset")
            ]
        if key not in record:
            return [self._problem(index, key, f"missing (the messages column; present keys: {sorted(record)})")]
        turns = record[key]
        if not isinstance(turns, list) or not turns:
            return [self._problem(index, key, "expected a non-empty list of turns")]
        t = self.tags
        role_tag, content_tag = t["role_tag"], t["content_tag"]
        known = {t["user_tag"], t["assistant_tag"], t["observation_tag"], t["function_tag"], t["system_tag"]}
        out: list[RecordProblem] = []
        roles: list[str] = []
        for i, turn in enumerate(turns):
            where = f"{key}[{i}]"
            if not isinstance(turn, dict):
                out.append(self._problem(index, where, "expected an object with role and content"))
                continue
            role = turn.get(role_tag)
            if role is None:
                out.append(self._problem(index, f"{where}.{role_tag}", "missing role"))
                continue
            if not isinstance(role, str):
                out.append(
                    self._problem(index, f"{where}.{role_tag}", f"expected a string role, got {type(role).__name__}")
                )
                continue
            if role not in known:
                out.append(
                    self._problem(
                        index,
                        f"{where}.{role_tag}",
                        f"unknown role {role!r} (expected one of {', '.join(sorted(known))})",
                    )
                )
                continue
            if not isinstance(turn.get(content_tag), str):
                out.append(self._problem(index, f"{where}.{content_tag}", "missing or not a string"))
            roles.append(role)
        if out:
            return out
        start = 1 if roles and roles[0] == t["system_tag"] else 0
        body = roles[start:]
        prompt_side = (t["user_tag"], t["observation_tag"])
        answer_side = (t["assistant_tag"], t["function_tag"])
        for i, role in enumerate(body):
            expected = prompt_side if i % 2 == 0 else answer_side
            if role not in expected:
                return [
                    self._problem(
                        index,
                        f"{key}[{i + start}].{role_tag}",
                        f"turns must alternate {'/'.join(prompt_side)} then {'/'.join(answer_side)}; got {role!r} here",
                    )
                ]
        if self.ranking:
            # LLaMA-Factory's ranking layout: the turns end with the prompt; the answers are chosen/rejected.
            if not body or len(body) % 2 == 0:
                return [
                    self._problem(
                        index,
                        key,
                        f"a ranking record's turns must end with the prompt ({'/'.join(prompt_side)}); "
                        f"the answers go in {self.chosen!r} and {self.rejected!r}",
                    )
                ]
            return self._check_pair(index, record)
        if not body or len(body) % 2:
            return [self._problem(index, key, "needs at least one prompt/answer pair and must end with an answer")]
        return out
