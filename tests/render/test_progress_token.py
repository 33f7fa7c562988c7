"""The push transport's token: pods still get nothing the API server would accept.

The API server authenticates a ServiceAccount token only when its audience is one of the
server's own (``--api-audiences``, default the issuer); a projected token with
``audience: kubetune`` is refused there.  So a rendered pod is safe when the automounted token
is off and every projected ServiceAccount token names an audience, and that audience is
``kubetune``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api import contract
from kubetune.render import RenderOptions, render
from tests.support.renderlib import EXAMPLES, OPERATOR_OPTIONS, example_files, example_id, load_example, pod_templates


def token_sources(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        source["serviceAccountToken"]
        for volume in spec.get("volumes") or []
        for source in (volume.get("projected") or {}).get("sources") or []
        if "serviceAccountToken" in source
    ]


@pytest.mark.parametrize("example", example_files(), ids=example_id)
def test_operator_rendered_pods_hold_no_token_the_api_server_accepts(example: Any) -> None:
    rendered = render(load_example(example), OPERATOR_OPTIONS)
    for role, template in pod_templates(rendered.workload).items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, role
        assert not any("secret" in v and "token" in v["secret"].get("secretName", "") for v in spec["volumes"]), role
        sources = token_sources(spec)
        container = spec["containers"][0]
        if role == "Launcher":
            # mpirun only: the trainers (rank 0 included) run in the Worker pods, started over ssh
            # with the variables forwarded (-x), and read the token file there.
            assert sources == [] and f"-x {contract.ENV_PROGRESS_URL}" in " ".join(container["command"])
        else:
            assert sources == [{"audience": contract.PROGRESS_AUDIENCE, "expirationSeconds": 600, "path": "token"}], (
                role
            )
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[contract.ENV_PROGRESS_URL] == OPERATOR_OPTIONS.progress_url
        assert env[contract.ENV_PROGRESS_TOKEN_FILE] == contract.PROGRESS_TOKEN_FILE
        if role != "Launcher":
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == contract.PROGRESS_TOKEN_DIR)
            assert mount["readOnly"] is True


@pytest.mark.parametrize("example", example_files(), ids=example_id)
def test_without_an_intake_url_nothing_is_added(example: Any) -> None:
    """kubetune render and run --local: no token volume, no variable; the log is the transport."""
    rendered = render(load_example(example))
    for template in pod_templates(rendered.workload).values():
        spec = template["spec"]
        assert token_sources(spec) == []
        names = {e["name"] for c in spec["containers"] for e in c.get("env") or []}
        assert not names & {contract.ENV_PROGRESS_URL, contract.ENV_PROGRESS_TOKEN_FILE}
        assert spec["automountServiceAccountToken"] is False


def test_the_url_is_data_never_structure() -> None:
    """An odd URL from the operator's flags stays one string value in the manifest."""
    url = 'http://x.svc:1/p", "injected": "1'
    rendered = render(load_example(EXAMPLES / "finetune-lora.yaml"), RenderOptions(progress_url=url))
    container = pod_templates(rendered.workload)["Master"]["spec"]["containers"][0]
    assert {"name": contract.ENV_PROGRESS_URL, "value": url} in container["env"]
    assert "injected" not in container


@pytest.mark.parametrize("name", [contract.ENV_PROGRESS_URL, contract.ENV_PROGRESS_TOKEN_FILE])
def test_a_job_cannot_redirect_its_progress_token(name: str) -> None:
    """spec.env may not override where rank 0 sends its token, or which file it reads."""
    from kubetune.render import validate_object
    from tests.support.renderlib import JobBuilder

    job, problems = validate_object(
        JobBuilder().set("spec.env", [{"name": name, "value": "http://elsewhere"}]).doc_copy()
    )
    assert job is None
    assert [p.path for p in problems] == ["spec.env[0].name"]
