"""Post-training settings: preference optimisation (DPO, ORPO, SimPO), KTO, PPO, and evaluation.

Each field maps onto one LLaMA-Factory 0.9.5 argument (``hparams/finetuning_args.py``
``RLHFArguments``); the mapping itself lives in :mod:`kubetune.render.lfargs`.
Optional numbers are ``None`` rather than LLaMA-Factory's default so that a rule
can tell "set by the user" from "left alone" (``has()`` in CEL).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, DNS1123Subdomain, HubId, RelativePath, Rule, RuledModel, one_of_rule

PreferenceLoss = Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"]

_NO_DOTDOT_PATH = "!has(self.path) || !self.path.matches('(^|/)[.][.](/|$)')"


class PreferenceSpec(RuledModel):
    """Preference optimisation settings (stages dpo and kto)."""

    beta: Annotated[float, Field(gt=0, le=100)] = 0.1
    """Inverse temperature of the preference loss (`pref_beta`); larger stays closer to the reference model."""
    loss: PreferenceLoss = "sigmoid"
    (
        "Stage dpo only (`pref_loss`): `sigmoid` (DPO), `hinge`, `ipo`, `kto_pair`, "
        "`orpo` (no reference model), `simpo` (no reference model)."
    )
    ftx: Annotated[float, Field(ge=0, le=100)] = 0.0
    """Weight of the supervised loss on the chosen answer added to the preference loss (`pref_ftx`)."""
    simpo_gamma: Annotated[float, Field(ge=0, le=100)] | None = None
    """SimPO target reward margin (`simpo_gamma`, LLaMA-Factory default 0.5); only with loss simpo."""
    label_smoothing: Annotated[float, Field(ge=0, le=0.5)] | None = None
    """Robust DPO (cDPO) label smoothing (`dpo_label_smoothing`); only with loss sigmoid."""

    rules = (
        Rule(
            name="simpo-gamma-needs-simpo",
            cel="!has(self.simpoGamma) || self.loss == 'simpo'",
            message="spec.training.preference.simpoGamma is the SimPO margin: set loss: simpo or remove simpoGamma",
            field_path=".simpoGamma",
            check=lambda p: p.simpo_gamma is None or p.loss == "simpo",
        ),
        Rule(
            name="label-smoothing-needs-sigmoid",
            cel="!has(self.labelSmoothing) || self.loss == 'sigmoid'",
            message="spec.training.preference.labelSmoothing only applies to loss sigmoid "
            "(LLaMA-Factory rejects it otherwise)",
            field_path=".labelSmoothing",
            check=lambda p: p.label_smoothing is None or p.loss == "sigmoid",
        ),
    )


class KtoSpec(ApiModel):
    """KTO settings (stage kto)."""

    desirable_weight: Annotated[float, Field(gt=0, le=100)] = 1.0
    """Weight of the losses on desirable (label true) examples (`kto_chosen_weight`)."""
    undesirable_weight: Annotated[float, Field(gt=0, le=100)] = 1.0
    """Weight of the losses on undesirable (label false) examples (`kto_rejected_weight`)."""


class RewardModelSpec(RuledModel):
    """The reward model PPO scores generations with: a model source or another FineTuneJob's output."""

    name: HubId | None = None
    """Hub id of a reward model with a value head (`reward_model`, type full). Exactly one of name, path or fromJob."""
    path: RelativePath | None = None
    """Folder of a reward model on the models volume (`reward_model`, type full)."""
    from_job: DNS1123Subdomain | None = None
    (
        "A FineTuneJob of stage rm in the same namespace, writing to the same outputs claim: "
        "its output is the reward model (a LoRA reward adapter needs method lora here)."
    )

    rules = (
        one_of_rule(
            "reward-model-one-source",
            ("name", "path", "from_job"),
            "spec.training.ppo.rewardModel: set exactly one of name (Hub id), "
            "path (models volume) or fromJob (a reward-modelling FineTuneJob)",
        ),
        Rule(
            name="reward-model-path-inside-volume",
            cel=_NO_DOTDOT_PATH,
            message="spec.training.ppo.rewardModel.path must stay inside the models volume: remove '..' segments",
            field_path=".path",
            check=lambda r: r.path is None or ".." not in r.path.split("/"),
        ),
    )


class PpoSpec(ApiModel):
    """PPO settings (stage ppo); the PPO arguments LLaMA-Factory exposes."""

    reward_model: RewardModelSpec
    """Required: the reward model (`reward_model`, `reward_model_type`)."""
    buffer_size: Annotated[int, Field(ge=1, le=1024)] = 1
    """Mini-batches in the experience buffer of one PPO step (`ppo_buffer_size`)."""
    epochs: Annotated[int, Field(ge=1, le=100)] = 4
    """Optimisation epochs per PPO step (`ppo_epochs`)."""
    score_norm: bool = False
    """Normalise reward scores (`ppo_score_norm`)."""
    target_kl: Annotated[float, Field(gt=0, le=1000)] = 6.0
    """Target KL for the adaptive KL controller (`ppo_target`)."""
    whiten_rewards: bool = False
    """Whiten rewards before computing advantages (`ppo_whiten_rewards`)."""
    max_new_tokens: Annotated[int, Field(ge=1, le=65536)] | None = None
    """Tokens generated per rollout (`max_new_tokens`; LLaMA-Factory default 1024)."""
