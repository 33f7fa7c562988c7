"""``kubetune render`` and ``kubetune validate`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.kt_time import scaled
import yaml

from kubetune.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
LORA = EXAMPLES / "finetune-lora.yaml"
FULL = EXAMPLES / "finetune-full.yaml"

BAD = """\
apiVersion: kubetune.io/v1alpha1
kind: FineTuneJob
metadata:
  name: broken
spec:
  model:
    name: Qwen/Qwen1.5-1.8B
    template: qwn
  datasets:
    - name: d
      path: data.jsonl
      revision: v1
  method: qlora
  training:
    learningRate: fast
  storage:
    outputs:
      claimName: out
  extraArgs:
    learning_rate: 0.1
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", str(LORA))
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "qwen-lora-kubetune"),
        ("PyTorchJob", "qwen-lora"),
    ]


def test_render_prints_the_golden_manifests_with_files_as_literal_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """What a GitOps user commits from `kubetune render` is exactly what the golden tests pin,
    and the ConfigMap's files read as files (literal blocks), not escaped one-liners."""
    code, out, _ = run(capsys, "render", str(LORA))
    assert code == 0
    assert out == (REPO / "tests/render/golden/finetune-lora.yaml").read_text(encoding="utf-8")
    assert "  train.yaml: |\n    stage: sft\n" in out


def test_render_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "-o", "json", str(LORA))
    assert code == 0
    objects = json.loads(out)
    assert [o["kind"] for o in objects] == ["ConfigMap", "PyTorchJob"]


def test_render_backend_override_and_image(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "--backend", "mpijob", "--image", "registry.local/t:1", str(LORA))
    assert code == 0
    workload = list(yaml.safe_load_all(out))[1]
    assert workload["kind"] == "MPIJob"
    launcher = workload["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["image"] == "registry.local/t:1"


def test_render_backend_override_that_contradicts_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(LORA.read_text())
    doc["spec"]["distributed"]["launcher"] = "accelerate"
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "render", "--backend", "mpijob", str(path))
    assert code == 1 and out == ""
    assert "launcher" in err


def test_render_multiple_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", str(LORA), str(FULL))
    assert code == 0
    names = [o["metadata"]["name"] for o in yaml.safe_load_all(out)]
    assert names == [
        "qwen-lora-kubetune",
        "qwen-lora",
        "qwen-full-kubetune",
        "qwen-full",
        "qwen-full-serve",
        "qwen-full-serve",
    ]


def test_render_prints_spec_serve_objects_after_the_training_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """GitOps users get the serving objects too, as valid multi-document YAML (and can leave them out)."""
    code, out, _ = run(capsys, "render", "-n", "ml", str(FULL))
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    assert [o["kind"] for o in objects] == ["ConfigMap", "PyTorchJob", "Deployment", "Service"]
    deployment, service = objects[2:]
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "ml"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["--model", "/outputs/ml/qwen-full"] and "--max-model-len" in container["args"]
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in (deployment, service):
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    code, out, _ = run(capsys, "render", "--no-serve", str(FULL))
    assert code == 0 and [o["kind"] for o in yaml.safe_load_all(out)] == ["ConfigMap", "PyTorchJob"]


def test_render_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(LORA.read_text()))
    code, out, _ = run(capsys, "render", "-o", "json", "-")
    assert code == 0 and [o["kind"] for o in json.loads(out)] == ["ConfigMap", "PyTorchJob"]


def test_render_refuses_invalid_job(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, err = run(capsys, "render", str(bad))
    assert code == 1 and out == ""
    assert "spec.training.learningRate" in err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--skip-llamafactory", str(LORA), str(FULL))
    assert code == 0
    assert "qwen-lora is valid" in out and "qwen-full is valid" in out
    assert out.count("LLaMA-Factory's parser skipped (--skip-llamafactory)") == 2


def test_validate_says_whether_llamafactorys_parser_ran(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubetune.trainer.lfcheck as lfcheck

    monkeypatch.setattr(lfcheck, "llamafactory_available", lambda: False)
    code, out, _ = run(capsys, "validate", str(LORA))
    assert code == 0
    assert "qwen-lora is valid; LLaMA-Factory's parser did not run: llamafactory is not installed here" in out


def test_validate_prints_every_problem_with_its_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, _, err = run(capsys, "validate", "--skip-llamafactory", str(bad))
    assert code == 1
    for path in (
        "spec.training.learningRate",
        "spec.model.template",
        "spec.datasets[0].revision",
        "spec.extraArgs.learning_rate",
    ):
        assert f"{bad}: {path}: " in err, f"{path} missing from:\n{err}"
    assert "did you mean 'qwen'" in err
    assert "spec.training.learningRate instead" in err


def test_validate_bad_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n  - x: {")
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 1 and "not valid YAML" in err


def test_validate_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 1 and "no such file" in err


def test_validate_file_without_jobs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, _, err = run(capsys, "validate", str(other))
    assert code == 1 and "no FineTuneJob" in err


def test_validate_multi_document_labels_each_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(LORA.read_text() + "\n---\n" + BAD)
    code, out, err = run(capsys, "validate", "--skip-llamafactory", str(both))
    assert code == 1
    assert f"{both}: FineTuneJob qwen-lora is valid" in out
    assert f"{both}#1: spec.model.template" in err


def test_cli_import_stays_light() -> None:
    """`kubetune render` must start fast and work without the ML stack or a cluster client."""
    heavy = ["torch", "transformers", "llamafactory", "kopf", "kubernetes", "kubernetes_asyncio", "aiohttp"]
    code = f"import sys, kubetune.cli; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=scaled(60), check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("missing", ["aiohttp", "kubernetes_asyncio"])
def test_cluster_commands_without_the_client_extra_say_what_to_install_import(tmp_path: Path, missing: str) -> None:
    """Without the ``client`` extra (kubernetes_asyncio and its aiohttp) `kubetune get` and kubetune.Client()
    say to install it, instead of a credentials error that sends the user to their kubeconfig."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c"}}],
                "current-context": "c",
            }
        ),
        encoding="utf-8",
    )
    code = f"import sys; sys.modules[{missing!r}] = None; from kubetune.cli import main; sys.exit(main(['get']))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=scaled(60))
    assert result.returncode != 0
    assert "the cluster client is not installed" in result.stderr
    assert "pip install 'kubetune[client]'" in result.stderr


def test_cli_render_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from kubetune.cli import main; "
        f"rc = main(['render', {str(LORA)!r}]); "
        "print('HEAVY', [m for m in ('torch', 'transformers', 'llamafactory', 'kopf', "
        "'kubernetes', 'kubernetes_asyncio', 'aiohttp') if m in sys.modules], file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60))
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llamafactory"), reason="needs the train extra (llamafactory)"
)
def test_validate_runs_llamafactorys_own_rules(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A rule only LLaMA-Factory knows (predict_with_generate is SFT-only) is caught before submission."""
    doc = yaml.safe_load(LORA.read_text())
    doc["spec"]["training"]["stage"] = "pt"
    doc["spec"]["datasets"] = [
        {"name": "text", "path": "corpus.jsonl", "format": "alpaca", "columns": {"prompt": "text"}}
    ]
    doc["spec"]["extraArgs"] = {"predict_with_generate": True}
    path = tmp_path / "pt.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert run(capsys, "validate", "--skip-llamafactory", str(path))[0] == 0, "kubetune's own checks accept it"
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert "LLaMA-Factory rejects" in err and "predict_with_generate" in err
    assert run(capsys, "validate", str(LORA))[0] == 0


@pytest.mark.train
@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llamafactory"), reason="needs the train extra (llamafactory)"
)
@pytest.mark.timeout(300)  # imports LLaMA-Factory in a subprocess (its own bound: 300 s)
def test_validate_with_llamafactory_prints_only_the_verdict() -> None:
    """LLaMA-Factory's parser logs run advice ("We recommend enable upcast_layernorm ...") for a
    QLoRA job; a validation answer must not drown in it."""
    qlora = EXAMPLES / "seed" / "qlora-deepspeed.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune", "validate", str(qlora)],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"{qlora}: FineTuneJob seed-qlora-deepspeed is valid; LLaMA-Factory "), line
    assert line.endswith("'s parser accepted its arguments"), line
    assert "recommend" not in proc.stderr, proc.stderr


def _namespaces(out: str) -> set[str]:
    return {o["metadata"]["namespace"] for o in json.loads(out)}


def test_render_namespace_flag_and_kubectl_context(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Examples carry no namespace: like `kubectl apply`, render uses -n, else the current context's."""
    code, out, _ = run(capsys, "render", "-o", "json", "-n", "team-a", str(LORA))
    assert code == 0 and _namespaces(out) == {"team-a"}
    spec = next(o for o in json.loads(out) if o["kind"] == "ConfigMap")
    assert "/team-a/qwen-lora" in json.dumps(spec)  # outputs go to <claim>/<namespace>/<name>
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("apiVersion: v1\nkind: Config\ncurrent-context: ml\n")
    second.write_text(
        "contexts: [{name: ml, context: {cluster: c, user: u, namespace: ml-team-b}}]\ncurrent-context: other\n"
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    code, out, _ = run(capsys, "render", "-o", "json", str(LORA))
    assert code == 0 and _namespaces(out) == {"ml-team-b"}
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    code, out, _ = run(capsys, "render", "-o", "json", str(LORA))
    assert code == 0 and _namespaces(out) == {"default"}


def test_render_refuses_a_namespace_that_contradicts_n(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = yaml.safe_load(LORA.read_text())
    doc["metadata"]["namespace"] = "prod"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "render", "-n", "team-a", str(path))
    assert code == 1 and out == ""
    assert 'namespace from the object "prod" does not match -n "team-a"' in err
    assert run(capsys, "render", "-n", "prod", str(path))[0] == 0


@pytest.mark.parametrize("command", ["validate", "render"])
def test_a_lora_target_the_model_lacks_is_a_field_problem_in_validate_and_render(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22: `kubetune validate` exited 2 ("unexpected error (ValueError ...)", from the memory
    planner) while `kubetune render` accepted the same file; both now refuse it at the field."""
    doc = yaml.safe_load(LORA.read_text(encoding="utf-8"))
    doc["spec"].setdefault("lora", {})["targetModules"] = ["q_proj", "wq"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    argv = [command, "--skip-llamafactory", str(path)] if command == "validate" else [command, str(path)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" if command == "render" else "is valid" not in out
    assert f"{path}: spec.lora.targetModules: wq is not a linear layer of " in err and "q_proj, k_proj" in err
    assert "unexpected error" not in err
