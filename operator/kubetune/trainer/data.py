"""The data stage: fetch, check and materialise every dataset, once per job.

* ``path`` datasets are read in place on the datasets volume (dataset_info.json
  already holds their absolute path) and only checked.
* ``hub`` datasets (``datasets.load_dataset``, token from ``HF_TOKEN``) and
  ``url`` datasets (plain HTTP(S)) are written as JSONL into the job's data
  folder (train.yaml's ``dataset_dir``) under the file name dataset_info.json
  gives them.
* every record is checked (:mod:`.datachecks`); a bad record fails the job with
  the dataset, record index and field named, and nothing half-written stays.
* dataset_info.json is copied into the data folder, where LLaMA-Factory looks.

Only global rank 0 does this.  It then writes a ready marker holding a digest
of the job's data description; the other processes wait for a marker with
that digest (a marker left by an earlier, different job of the same name does
not count), or for a failure marker, whose message they repeat.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kubetune.api import DatasetSpec, contract

from .config import JobConfig
from .errors import DataError, Retryable, TrainerError
from .fsutil import wait_for, write_text_atomic
from .datachecks import RecordChecker, RecordProblem

READY_MARKER = ".kubetune-data-ready"
FAILED_MARKER = ".kubetune-data-failed"
EVAL_FAILED_MARKER = ".kubetune-eval-data-failed"
"""Problems of spec.evaluation.datasets: they fail the evaluation, never the training."""
MAX_REPORTED = 10
"""Problems listed in one failure message; the count of the rest is given."""
ENV_WAIT_TIMEOUT = "KUBETUNE_DATA_TIMEOUT"


def digest(cfg: JobConfig) -> str:
    """Identifies what the data stage produces for this job."""
    blob = json.dumps(
        {"info": cfg.dataset_info, "datasets": [d.to_api() for d in cfg.job.spec.datasets]}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# --- reading records ---------------------------------------------------------------


def _json_records(path: Path, label: str | None = None) -> Iterator[Any]:
    """Records of a JSON array file or a JSON-lines file (LLaMA-Factory accepts both).

    ``label`` names the source in errors (a dataset's URL rather than the scratch file it
    was downloaded to).  Bytes that are not UTF-8 and nesting too deep for the JSON
    parser are DataErrors naming the line, not crashes."""
    where = label or str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            head = ""
            while True:
                ch = fh.read(1)
                if not ch or not ch.isspace():
                    head = ch
                    break
            fh.seek(0)
            if head == "[":
                try:
                    data = json.load(fh)
                except (ValueError, RecursionError) as exc:
                    raise DataError(f"{where}: not valid JSON: {_brief(exc)}") from None
                if not isinstance(data, list):
                    raise DataError(f"{where}: expected a JSON array of records or JSON lines")
                yield from data
                return
            if head == "{" and not _looks_like_lines(path):
                raise DataError(
                    f"{where}: expected a JSON array of records or JSON lines (one object "
                    "per line), got one JSON object"
                )
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except (ValueError, RecursionError) as exc:
                        raise DataError(f"{where}: line {lineno} is not valid JSON: {_brief(exc)}") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded): save it as UTF-8"
        ) from None


def _looks_like_lines(path: Path) -> bool:
    """A file starting with '{' is JSON lines when its first line is a whole JSON value."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    try:
        json.loads(first)
    except RecursionError:
        return True  # one whole (if absurdly deep) value on the line: reported with its line number
    except ValueError:
        return False
    return True


def _brief(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _table_records(path: Path) -> Iterator[Any]:
    """Records of parquet/csv/arrow files, through the datasets library LLaMA-Factory uses."""
    import datasets  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - heavy, only for these formats

    builder = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}[path.suffix]
    yield from datasets.load_dataset(builder, data_files=str(path), split="train")


_READERS = {
    ".json": _json_records,
    ".jsonl": _json_records,
    ".parquet": _table_records,
    ".csv": _table_records,
    ".arrow": _table_records,
}


def local_files(path: Path) -> list[Path]:
    """The data files of a path dataset (a file, or every supported file in a folder)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _READERS)
        if files:
            return files
        raise DataError(f"{path}: folder holds no .json/.jsonl/.parquet/.csv/.arrow files")
    raise DataError(f"{path}: no such file or folder on the datasets volume")


def _records_of(files: Iterable[Path]) -> Iterator[Any]:
    for f in files:
        reader = _READERS.get(f.suffix)
        if reader is None:
            raise DataError(f"{f}: unsupported file type {f.suffix!r} (use .json, .jsonl, .parquet, .csv or .arrow)")
        yield from reader(f)


def _url_records(spec: DatasetSpec, env: Mapping[str, str], scratch: Path) -> Iterator[Any]:
    """Download to a scratch file first, checked (size, sha256) before it is read (kubetune.trainer.download)."""
    from . import download  # noqa: PLC0415

    url = str(spec.url)
    suffix = ".jsonl" if url.split("?")[0].endswith(".jsonl") else ".json"
    target = scratch / f"download{suffix}"
    try:
        download.fetch(url, target, env, sha256=spec.sha256)
        yield from _json_records(target, label=url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _object_records(uri: str, env: Mapping[str, str], scratch: Path) -> Iterator[Any]:
    """An s3:// object or prefix (kubetune.trainer.objectstore), staged to scratch files and read
    like path datasets; the scratch folder goes when the records are read."""
    from . import objectstore  # noqa: PLC0415 - boto3 is in the train extra only

    try:
        for source, f in objectstore.stage_dataset(uri, scratch, env):
            # Problems name the object (s3://bucket/key), never the scratch file.
            yield from (_json_records(f, label=source) if f.suffix in (".json", ".jsonl") else _records_of([f]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remote_records(spec: DatasetSpec, env: Mapping[str, str], scratch: Path) -> Iterator[Any]:
    if spec.hub:
        return _hub_records(spec, env)
    if spec.uri:
        return _object_records(spec.uri, env, scratch)
    return _url_records(spec, env, scratch)


def _hub_records(spec: DatasetSpec, env: Mapping[str, str]) -> Iterator[Any]:
    import datasets  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415 - heavy, only for hub datasets

    try:
        ds = datasets.load_dataset(
            spec.hub,
            name=spec.subset,
            split=spec.split,
            revision=spec.revision,
            token=env.get(contract.ENV_HF_TOKEN) or None,
        )
    except (ConnectionError, TimeoutError) as exc:
        raise Retryable(f"dataset {spec.name!r}: Hub unreachable: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the Hub client has no common error base
        if "connect" in str(exc).lower() or "timed out" in str(exc).lower():
            raise Retryable(f"dataset {spec.name!r}: Hub unreachable: {exc}") from None
        raise DataError(f"dataset {spec.name!r}: cannot load {spec.hub!r} from the Hub: {exc}") from None
    yield from ds


# --- checking and writing -------------------------------------------------------------


def check_records(checker: RecordChecker, records: Iterable[Any], sink: Any | None = None) -> int:
    """Check every record (writing good ones to ``sink`` as JSONL); raise DataError listing problems."""
    problems: list[RecordProblem] = []
    count = 0
    for index, record in enumerate(records):
        count += 1
        try:
            found = checker.check(index, record)
        except (RecursionError, TypeError, ValueError) as exc:  # a shape the checks did not foresee
            found = [
                RecordProblem(
                    checker.dataset, index, "<record>", f"cannot be read ({type(exc).__name__}: {_brief(exc)})"
                )
            ]
        problems.extend(found)
        if sink is not None and not problems:
            try:
                line = json.dumps(record, ensure_ascii=False, default=str)
            except (RecursionError, ValueError) as exc:
                problems.append(
                    RecordProblem(checker.dataset, index, "<record>", f"cannot be written as JSON ({_brief(exc)})")
                )
                continue
            sink.write(line + "\n")
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"dataset {checker.dataset!r} has {len(problems)} invalid record field(s):\n  {shown}{more}")
    if count == 0:
        raise DataError(f"dataset {checker.dataset!r} has no records")
    return count


def prepare(cfg: JobConfig, env: Mapping[str, str]) -> dict[str, int]:
    """Rank 0's work: returns the record count per dataset."""
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    for marker in (READY_MARKER, FAILED_MARKER):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / marker).unlink()
    with contextlib.suppress(FileNotFoundError):
        (data_dir / EVAL_FAILED_MARKER).unlink()
    stage = str(cfg.train_args.get("stage", cfg.job.spec.training.stage))
    evaluation = cfg.job.spec.evaluation
    held_out = list(evaluation.datasets) if evaluation is not None and evaluation.datasets else []
    specs = {d.name: d for d in [*cfg.job.spec.datasets, *held_out]}
    eval_names = {d.name for d in held_out}
    eval_problems: list[str] = []
    counts: dict[str, int] = {}
    checkers: dict[str, RecordChecker] = {}
    staged: list[tuple[Path, Path]] = []
    name = "?"
    try:
        for name, entry in cfg.dataset_info.items():
            checker = checkers[name] = RecordChecker(name, entry, stage=stage)
            file_name = entry.get("file_name")
            if not isinstance(file_name, str) or not file_name:
                raise DataError(f"{contract.DATASET_INFO_FILE}: dataset {name!r} has no file_name")
            spec = specs.get(name)
            if name in eval_names:
                try:
                    counts[name] = _prepare_one(checker, name, file_name, spec, data_dir, env, staged)
                except DataError as exc:  # the evaluation fails later, with this reason; training goes on
                    eval_problems.append(str(exc))
                continue
            if os.path.isabs(file_name):
                counts[name] = check_records(checker, _records_of(local_files(Path(file_name))))
                continue
            if spec is None or (spec.hub is None and spec.url is None and spec.uri is None):
                raise DataError(
                    f"dataset {name!r}: {file_name} is relative but the job gives no hub, url or uri to fetch it from"
                )
            records = _remote_records(spec, env, data_dir / f".{name}.download")
            final = data_dir / file_name
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            staged.append((tmp, final))
            with open(tmp, "w", encoding="utf-8") as sink:
                counts[name] = check_records(checker, records, sink)
                sink.flush()
                os.fsync(sink.fileno())
        # Every dataset is valid: only now do the materialised files appear, all together.
        for tmp, final in staged:
            if tmp.exists():
                os.replace(tmp, final)
        if eval_problems:
            write_text_atomic(data_dir / EVAL_FAILED_MARKER, "\n".join(eval_problems) + "\n")
        unused = {n: c.unused_columns() for n, c in checkers.items() if n in counts}
        write_text_atomic(
            data_dir / contract.DATASET_INFO_FILE,
            json.dumps(capped_info(cfg.dataset_info, counts, unused), indent=2) + "\n",
        )
    except DataError as exc:
        named = exc if str(exc).startswith("dataset ") else DataError(f"dataset {name!r}: {exc}")
        _fail(cfg, named)
        raise named from None
    except TrainerError as exc:
        _fail(cfg, exc)
        raise
    except Exception as exc:  # noqa: BLE001 - any data failure must release the other ranks at once
        source = _source(specs.get(name), cfg.dataset_info.get(name, {}))
        error = DataError(f"dataset {name!r} ({source}): cannot be read: {type(exc).__name__}: {_brief(exc)}")
        _fail(cfg, error)
        raise error from exc
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    write_text_atomic(
        data_dir / READY_MARKER, json.dumps({"digest": digest(cfg), "records": counts, "stamps": file_stamps(cfg)})
    )
    return counts


def _fail(cfg: JobConfig, exc: TrainerError) -> None:
    """The failure marker: the other ranks stop waiting and repeat this message."""
    write_text_atomic(
        cfg.data_dir / FAILED_MARKER,
        json.dumps({"digest": digest(cfg), "exitCode": exc.exit_code, "message": str(exc)}),
    )


def _source(spec: DatasetSpec | None, entry: Mapping[str, Any]) -> str:
    """How a user knows the dataset: its URL, Hub id or file."""
    if spec is not None and spec.url is not None:
        return str(spec.url)
    if spec is not None and spec.uri is not None:
        return spec.uri
    if spec is not None and spec.hub is not None:
        return f"hub {spec.hub}"
    return str(entry.get("file_name", "?"))


def _prepare_one(
    checker: RecordChecker,
    name: str,
    file_name: str,
    spec: DatasetSpec | None,
    data_dir: Path,
    env: Mapping[str, str],
    staged: list[tuple[Path, Path]],
) -> int:
    """Check (and for hub/url, materialise) one held-out dataset; a bad one leaves no file behind."""
    if os.path.isabs(file_name):
        return check_records(checker, _records_of(local_files(Path(file_name))))
    if spec is None or (spec.hub is None and spec.url is None and spec.uri is None):
        raise DataError(
            f"dataset {name!r}: {file_name} is relative but the job gives no hub, url or uri to fetch it from"
        )
    records = _remote_records(spec, env, data_dir / f".{name}.download")
    final = data_dir / file_name
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as sink:
            count = check_records(checker, records, sink)
            sink.flush()
            os.fsync(sink.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    staged.append((tmp, final))
    return count


def eval_data_problem(cfg: JobConfig) -> str | None:
    """Why the held-out datasets cannot be used (found by the data stage), or None."""
    try:
        return (cfg.data_dir / EVAL_FAILED_MARKER).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def file_stamps(cfg: JobConfig) -> list[list[Any]]:
    """(path, size, mtime) of every local data file: an edited file invalidates what was derived from it."""
    stamps: list[list[Any]] = []
    for entry in cfg.dataset_info.values():
        name = entry.get("file_name")
        if isinstance(name, str) and os.path.isabs(name):
            try:
                files = local_files(Path(name))
            except DataError:
                continue
            for f in files:
                st = f.stat()
                stamps.append([str(f), st.st_size, st.st_mtime_ns])
    return stamps


def reusable(cfg: JobConfig) -> dict[str, int] | None:
    """The record counts of an earlier data stage of this very job, when its output still matches
    the spec (same digest, local files unchanged, materialised files present): a restart then skips
    re-reading and re-checking every record."""
    marker = _marker(cfg.data_dir / READY_MARKER)
    if marker is None or marker.get("digest") != digest(cfg) or marker.get("stamps") != file_stamps(cfg):
        return None
    counts = marker.get("records")
    if not isinstance(counts, dict) or set(counts) != set(cfg.dataset_info):
        return None
    for entry in cfg.dataset_info.values():
        name = entry.get("file_name")
        if isinstance(name, str) and not os.path.isabs(name) and not (cfg.data_dir / name).is_file():
            return None
    if not (cfg.data_dir / contract.DATASET_INFO_FILE).is_file():
        return None
    return {str(k): int(v) for k, v in counts.items()}


def capped_info(
    info: Mapping[str, Mapping[str, Any]], counts: Mapping[str, int], unused: Mapping[str, list[str]] | None = None
) -> dict[str, dict[str, Any]]:
    """dataset_info.json as LLaMA-Factory must see it: ``num_samples`` never above the record count,
    and no optional column that no record has (``unused``: RecordChecker.unused_columns).

    LLaMA-Factory's loader treats ``num_samples`` as a target and, when a dataset
    is smaller, draws the missing records again with replacement
    (llamafactory/data/loader.py ``_load_single_dataset``).  spec.datasets[].maxSamples
    means "at most", so a cap at or above the count is dropped: every record, once.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, entry in info.items():
        entry = dict(entry)
        want = entry.get("num_samples")
        if isinstance(want, int) and name in counts and want >= counts[name]:
            del entry["num_samples"]
        drop = (unused or {}).get(name)
        if drop and isinstance(entry.get("columns"), dict):
            entry["columns"] = {k: v for k, v in entry["columns"].items() if k not in drop}
        out[name] = entry
    return out


def samples_used(cfg: JobConfig, counts: Mapping[str, int]) -> dict[str, int]:
    """Records of each dataset the training sees: the count, capped by datasets[].maxSamples
    and by training.maxSamples (LLaMA-Factory's ``max_samples``, applied per dataset)."""
    overall = cfg.train_args.get("max_samples")
    used: dict[str, int] = {}
    for name, count in counts.items():
        n = count
        per = cfg.dataset_info.get(name, {}).get("num_samples")
        if isinstance(per, int):
            n = min(n, per)
        if isinstance(overall, int):
            n = min(n, overall)
        used[name] = n
    return used


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def wait_ready(cfg: JobConfig, env: Mapping[str, str]) -> None:
    """The other processes: wait for rank 0's marker for this very job."""
    want = digest(cfg)
    ready = cfg.data_dir / READY_MARKER
    failed = cfg.data_dir / FAILED_MARKER

    def is_ready() -> bool:
        marker = _marker(ready)
        if marker is not None and marker.get("digest") == want:
            return True
        bad = _marker(failed)
        if bad is not None and bad.get("digest") == want:
            err = DataError(f"rank 0 failed to prepare the data: {bad.get('message')}")
            err.exit_code = int(bad.get("exitCode", err.exit_code))
            raise err
        return False

    wait_for("rank 0 to prepare the datasets", is_ready, timeout=float(env.get(ENV_WAIT_TIMEOUT, "3600")))
