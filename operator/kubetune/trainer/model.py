"""The model stage: make sure the base model is on disk before any training process starts.

* ``spec.model.path``: a folder on the models volume; it must hold a
  ``config.json`` (a missing model is a configuration error, not worth a retry).
* ``spec.model.uri``: an s3:// prefix, mirrored into the models volume
  (:func:`kubetune.trainer.objectstore.stage_model`, ETag-keyed).
* ``spec.model.fromJob`` of a source whose results are in a bucket: its results are
  downloaded first (:func:`fetch_source`), then the base model as below.
* ``spec.model.name``: a Hub id, downloaded with ``huggingface_hub`` into the
  HF cache (``HF_HOME``, on the models volume) so later jobs reuse it.

The first process of each node downloads and the others on that node wait for
its marker.  Not global rank 0 alone: without a ReadWriteMany models volume
every node has its own cache (an emptyDir), and a node whose cache stays empty
would wait forever.  With a shared cache the Hub client's file locks make
concurrent downloads safe, and a complete cache is only a metadata check.
Once the model is cached, training runs with ``HF_HUB_OFFLINE=1``: N ranks
must not each ask the Hub again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kubetune.api import contract
from kubetune.api.objectstore import model_cache_subdir

from .config import JobConfig
from .errors import ConfigError, Retryable
from .fsutil import wait_for, write_text_atomic

ENV_WAIT_TIMEOUT = "KUBETUNE_MODEL_TIMEOUT"


def hf_home(cfg: JobConfig, env: Mapping[str, str]) -> Path:
    return Path(env.get("HF_HOME") or cfg.models_dir / ".cache" / "huggingface")


def _marker(cfg: JobConfig, env: Mapping[str, str]) -> Path:
    model = cfg.job.spec.model
    if model.name is None:  # fromJob with a Hub base model (see download)
        model = model.model_copy(
            update={
                "name": str(cfg.train_args.get("model_name_or_path")),
                "revision": cfg.train_args.get("model_revision"),
            }
        )
    key = hashlib.sha256(f"{model.name}@{model.revision or 'main'}".encode()).hexdigest()[:16]
    return hf_home(cfg, env) / f".kubetune-model-{key}.ready"


def launch_token() -> str:
    """What the processes of one launch on one node share, and a later launch does not: the parent
    process (mpirun's daemon for MPI ranks, the agent for torchrun's) and its start time since boot
    (/proc/<pid>/stat field 22, proc(5)), so a restarted pod whose parent gets the same PID again still
    differs. Without /proc (a laptop's run --local): the parent's PID alone."""
    ppid = os.getppid()
    try:
        # Bytes: comm is whatever the parent named itself (prctl PR_SET_NAME, /proc/<pid>/comm), not
        # necessarily ASCII or UTF-8, and may hold spaces and ")": the last ")" ends it (proc(5)).
        stat = Path(f"/proc/{ppid}/stat").read_bytes()
        started = (
            stat[stat.rindex(b")") + 2 :].split()[19].decode("ascii")
        )  # after "(comm)": state is field 3, starttime 22
    except (OSError, ValueError, IndexError):
        started = "?"
    return f"{ppid}:{started}"


def publish(marker: Path, where: str) -> None:
    """The first process on this node says where the model is, for this launch only."""
    write_text_atomic(marker, f"{where}\n{launch_token()}\n")


def await_published(marker: Path, what: str, env: Mapping[str, str]) -> str:
    """The other processes on this node: wait for the marker the first one writes in this launch. A marker
    left on a models claim by an earlier launch names a folder that the first process may be rewriting
    (a changed model in the bucket): it does not count."""
    token = launch_token()

    def fresh() -> bool:
        try:
            lines = marker.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 2 and lines[1] == token

    wait_for(what, fresh, timeout=float(env.get(ENV_WAIT_TIMEOUT, "7200")))
    return marker.read_text(encoding="utf-8").splitlines()[0].strip()


def local_model_dir(cfg: JobConfig) -> Path | None:
    """The model's folder when it is (or names) a local folder; None for a Hub id."""
    spec = cfg.job.spec.model
    if spec.path is not None:
        return cfg.models_dir / spec.path
    name = str(cfg.train_args.get("model_name_or_path", ""))
    return Path(name) if name.startswith("/") else None


SKIP_ALWAYS = (
    "original/*",
    "*.gguf",
    "*.onnx",
    "onnx/*",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.tflite",
    "coreml/*",
    "*.mlmodel",
)
"""Never needed to train with transformers: Meta's original checkpoints (Llama's original/*.pth),
and other frameworks' or runtimes' copies of the weights."""
DUPLICATE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
"""PyTorch-pickle copies of the weights: skipped when the repository has safetensors, which
transformers prefers anyway (many repositories ship both, doubling the download)."""


def ignore_patterns(files: Iterable[str]) -> list[str]:
    """What ``snapshot_download`` should skip for a repository holding ``files``."""
    names = list(files)
    patterns = list(SKIP_ALWAYS)
    if any(n.endswith(".safetensors") and not n.startswith("original/") for n in names):
        patterns += DUPLICATE_WEIGHTS
    return patterns


def download(cfg: JobConfig, env: Mapping[str, str]) -> str:
    """Fetch a Hub model into the cache (only what training needs); returns its snapshot folder."""
    from huggingface_hub import HfApi, snapshot_download  # noqa: PLC0415 - train extra only
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError  # noqa: PLC0415

    spec = cfg.job.spec.model
    if spec.name is None:
        # spec.model.fromJob on a job that left an adapter: its base model's Hub id is in train.yaml.
        spec = spec.model_copy(
            update={"name": str(cfg.train_args["model_name_or_path"]), "revision": cfg.train_args.get("model_revision")}
        )
    assert spec.name is not None
    offline = env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    token = env.get(contract.ENV_HF_TOKEN) or None
    try:
        files = [] if offline else HfApi(token=token).list_repo_files(spec.name, revision=spec.revision)
        return str(
            snapshot_download(
                repo_id=spec.name,
                revision=spec.revision,
                cache_dir=str(hf_home(cfg, env) / "hub"),
                token=token,
                local_files_only=offline,
                ignore_patterns=ignore_patterns(files),
            )
        )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise ConfigError(f"spec.model.name {spec.name!r}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - network errors have no common base in the Hub client
        if offline:
            raise ConfigError(
                f"spec.model.name {spec.name!r} is not in the model cache and HF_HUB_OFFLINE is set"
            ) from None
        raise Retryable(f"spec.model.name {spec.name!r}: download failed: {exc}") from None


def prepare(cfg: JobConfig, env: Mapping[str, str], *, local_zero: bool) -> str:
    """Returns where the model is (a folder, or the Hub id now in the cache)."""
    results = env.get(contract.ENV_SOURCE_RESULTS_URI)
    if results and cfg.job.spec.model.from_job is not None:
        fetch_source(cfg, env, results, local_zero=local_zero)
    uri = cfg.job.spec.model.uri
    if uri is not None:
        return _stage_from_bucket(cfg, env, uri, local_zero=local_zero)
    folder = local_model_dir(cfg)
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"model folder {folder} has no config.json (spec.model.path is relative to the models volume)"
            )
        return str(folder)
    marker = _marker(cfg, env)
    if local_zero:
        where = download(cfg, env)
        publish(marker, where)
        return where
    return await_published(marker, "the first process on this node to download the model", env)


def _stage_from_bucket(cfg: JobConfig, env: Mapping[str, str], uri: str, *, local_zero: bool) -> str:
    """spec.model.uri: the first process of each node mirrors the prefix into the models volume
    (only objects whose ETag changed), the others wait for its marker."""
    from . import objectstore  # noqa: PLC0415 - boto3 is in the train extra only

    return str(_stage_once(cfg, env, uri, objectstore.stage_model, "the model", local_zero=local_zero))


def fetch_source(cfg: JobConfig, env: Mapping[str, str], results_uri: str, *, local_zero: bool) -> Path:
    """spec.model.fromJob of a job whose results are in a bucket (kubetune.render.chain): the first
    process of each node copies the files the source's ``_KUBETUNE_COMPLETE`` lists (its adapter or
    model, ``merged/``; never its checkpoints) into the folder train.yaml's model_name_or_path /
    adapter_name_or_path point into; the others wait for its marker.  The copy is kept per results
    URI with each object's ETag (objectstore.download_results, as the serving pods' fetch-results
    does), so a later run on a models claim downloads only what changed.  A source whose marker is
    missing (it has not succeeded, or its upload is under way) is a StorageError naming the marker."""
    from . import objectstore  # noqa: PLC0415 - boto3 is in the train extra only

    return _stage_once(
        cfg, env, results_uri, objectstore.download_results, "the source job's results", local_zero=local_zero
    )


def _stage_once(
    cfg: JobConfig,
    env: Mapping[str, str],
    uri: str,
    copy: Callable[[str, Path, Mapping[str, str]], object],
    what: str,
    *,
    local_zero: bool,
) -> Path:
    """The first process of this node copies ``uri`` into its folder of the models volume (``copy``) and
    publishes it for this launch; the node's other processes wait for that marker."""
    folder = cfg.models_dir / model_cache_subdir(uri)
    marker = folder.with_name(folder.name + ".ready")
    if local_zero:
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        copy(uri, folder, env)
        publish(marker, str(folder))
        return folder
    return Path(await_published(marker, f"the first process on this node to download {what}", env))


def offline_env(env: Mapping[str, str]) -> dict[str, str]:
    """The training environment once the model is cached: no Hub traffic from N ranks."""
    out = dict(env)
    out["HF_HUB_OFFLINE"] = "1"
    out.setdefault("HF_DATASETS_OFFLINE", "1")
    return out
