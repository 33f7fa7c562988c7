"""spec.tracking: TensorBoard, MLflow and Weights & Biases.

Part of the FineTuneJob spec (see :mod:`kubetune.api.spec`): every attribute docstring
becomes the field's description in the CRD (``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import (
    ApiModel,
    Rule,
    RuledModel,
)
from .env import SecretKeyRef

HttpUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f'\"`$\\]+$")]
"""An http(s) address; no whitespace, quotes or shell metacharacters."""


class TensorBoardSpec(ApiModel):
    """TensorBoard event files written next to the checkpoints."""

    enabled: bool = True
    (
        "Write TensorBoard event files to <outputs>/<namespace>/<name>/runs (point `tensorboard --logdir` at the "
        "outputs volume). On by default: it costs a few KB per logging step and needs no server."
    )


class MLflowSpec(RuledModel):
    """Log metrics and parameters to an MLflow tracking server (transformers' MLflowCallback)."""

    tracking_uri: HttpUrl
    """MLflow tracking server address, e.g. `http://mlflow.mlflow.svc:5000` (`MLFLOW_TRACKING_URI`)."""
    experiment: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-/ ]+$")] | None = None
    """Experiment name (`MLFLOW_EXPERIMENT_NAME`). Unset: the job's namespace."""
    username_secret_ref: SecretKeyRef | None = None
    """Secret key holding the basic-auth user name (`MLFLOW_TRACKING_USERNAME`); needs passwordSecretRef."""
    password_secret_ref: SecretKeyRef | None = None
    """Secret key holding the basic-auth password (`MLFLOW_TRACKING_PASSWORD`); needs usernameSecretRef."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token (`MLFLOW_TRACKING_TOKEN`), instead of user name and password."""

    rules = (
        Rule(
            name="mlflow-basic-auth-pair",
            cel="has(self.usernameSecretRef) == has(self.passwordSecretRef)",
            message="spec.tracking.mlflow: set both usernameSecretRef and passwordSecretRef (basic auth), or neither",
            field_path=".passwordSecretRef",
            check=lambda m: (m.username_secret_ref is None) == (m.password_secret_ref is None),
        ),
        Rule(
            name="mlflow-one-auth",
            cel="!has(self.tokenSecretRef) || !has(self.usernameSecretRef)",
            message="spec.tracking.mlflow: use either tokenSecretRef or usernameSecretRef/passwordSecretRef, not both",
            field_path=".tokenSecretRef",
            check=lambda m: m.token_secret_ref is None or m.username_secret_ref is None,
        ),
    )


class WandbSpec(ApiModel):
    """Log to Weights & Biases (transformers' WandbCallback)."""

    project: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
    """W&B project (`WANDB_PROJECT`)."""
    entity: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None
    """W&B team or user (`WANDB_ENTITY`). Unset: the API key's default entity."""
    api_key_secret_ref: SecretKeyRef
    """Secret key holding the W&B API key (`WANDB_API_KEY`); never inline."""
    base_url: HttpUrl | None = None
    """Self-hosted W&B server (`WANDB_BASE_URL`). Unset: the W&B cloud."""


class TrackingSpec(ApiModel):
    """Experiment tracking: where loss, learning rate and evaluation metrics go besides the FineTuneJob status. Sets
    LLaMA-Factory's `report_to`."""

    tensorboard: TensorBoardSpec = TensorBoardSpec()
    """TensorBoard event files on the outputs volume (on by default)."""
    mlflow: MLflowSpec | None = None
    """An MLflow tracking server."""
    wandb: WandbSpec | None = None
    """Weights & Biases."""

    def report_to(self) -> list[str]:
        """transformers' `report_to` integrations, in a stable order."""
        out = []
        if self.tensorboard.enabled:
            out.append("tensorboard")
        if self.mlflow is not None:
            out.append("mlflow")
        if self.wandb is not None:
            out.append("wandb")
        return out
