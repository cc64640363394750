"""Job specification shared by the engine, the service and the worker.

Pure pydantic: importing this module must never pull in torch. The shapes follow the OpenAI
fine-tuning API (`method = {"type": "dpo", "dpo": {"hyperparameters": {...}}}`) and extend it
with the engine's own knobs. Values the user may leave to us accept "auto", like OpenAI's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Auto = Literal["auto"]

# Methods a job may run on several ranks (rlhf_engine/distributed.py; tests/unit/test_distributed.py,
# test_online_ranks.py, test_ranks_sft_reward.py): the others run on one until their parity with one
# process is tested.
DATA_PARALLEL_METHODS = ("dpo", "supervised", "reward_model", "rebel", "refuel", "dpo_last_turn", "dpo_multi_turn")

# Methods that may train every weight (`finetuning_type: "full"`; docs/distributed.md): the others
# train a LoRA adapter only.
FULL_FINETUNING_METHODS = ("dpo", "supervised")

# Loss names the DPO family understands; see rlhf_engine/losses.py for the formulas.
PreferenceLoss = Literal["sigmoid", "ipo", "hinge", "robust", "simpo", "sft"]


class StrictModel(BaseModel):
    """Unknown fields are an error: a typo in a hyperparameter must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class LoraSpec(StrictModel):
    r: int = Field(8, ge=1, le=512)
    alpha: float = Field(16.0, gt=0, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "all-linear" targets every linear layer of the transformer blocks (not the LM head).
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and (not value or any(not m.strip() for m in value)):
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        return value


class TrainingHyperparameters(StrictModel):
    """Knobs every gradient-based method shares. The loop in rlhf_engine/train.py owns them."""

    n_epochs: Union[Auto, int] = Field("auto", description="passes over the data; auto = 3")
    batch_size: Union[Auto, int] = Field("auto", description="examples per optimizer step; auto = 4")
    learning_rate_multiplier: Union[Auto, float] = Field("auto", description="scales learning_rate; auto = 1")
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="base LR for LoRA before the multiplier")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, le=0.5)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0, le=1e4)
    max_length: int = Field(1024, ge=16, le=131072, description="prompt + completion tokens")
    max_prompt_length: int = Field(768, ge=8, le=131072)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    gradient_checkpointing: bool = False
    eval_interval: int = Field(0, ge=0, description="steps between evaluations; 0 = only at the end")
    checkpoint_interval: int = Field(0, ge=0, description="steps between checkpoints; 0 = once per epoch")
    # Fewer ranks than the worker's RLHF_TRAIN_PROCESSES (never more); results do not depend on it.
    train_processes: Union[Auto, int] = Field("auto", description="training processes; auto = the worker's")
    # "full": every weight trains (no LoRA; the output is a transformers directory), sharded over the
    # job's ranks with FSDP2 (rlhf_engine/sharding.py). Offered where `full_finetuning` is set.
    finetuning_type: Literal["lora", "full"] = Field("lora", description="'lora' (an adapter) or 'full' (every weight)")
    full_finetuning: ClassVar[bool] = False

    @field_validator("finetuning_type")
    @classmethod
    def _full(cls, v):
        if v == "full" and not cls.full_finetuning:
            raise ValueError(f"finetuning_type 'full' is offered by the {' and '.join(FULL_FINETUNING_METHODS)} "
                             "methods only; this method trains a LoRA adapter")
        return v

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, v):
        if v != "auto" and not 1 <= v <= 100:
            raise ValueError("n_epochs must be 'auto' or an integer in [1, 100]")
        return v

    @field_validator("train_processes")
    @classmethod
    def _processes(cls, v):
        if v != "auto" and not 1 <= v <= 64:
            raise ValueError("train_processes must be 'auto' or an integer in [1, 64]")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v):
        if v != "auto" and not 1 <= v <= 1024:
            raise ValueError("batch_size must be 'auto' or an integer in [1, 1024]")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _lrm(cls, v):
        if v != "auto" and not 0 < v <= 100:
            raise ValueError("learning_rate_multiplier must be 'auto' or a number in (0, 100]")
        return v

    @model_validator(mode="after")
    def _prompt_fits(self):
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self

    # Resolved values: the engine only ever reads these.
    @property
    def epochs(self) -> int:
        return 3 if self.n_epochs == "auto" else self.n_epochs

    @property
    def examples_per_step(self) -> int:
        return 4 if self.batch_size == "auto" else self.batch_size

    @property
    def lr_multiplier(self) -> float:
        return 1.0 if self.learning_rate_multiplier == "auto" else self.learning_rate_multiplier

    @property
    def lr(self) -> float:
        return self.learning_rate * self.lr_multiplier

    @property
    def full(self) -> bool:
        return self.finetuning_type == "full"


class EvalSamples(StrictModel):
    """Replies shown while a method that generates trains (rlhf_engine/samples.py): at every
    evaluation, and once from the base model at step 0. Not for reward models, which only score."""

    eval_samples: int = Field(4, ge=0, le=32, description="held-out prompts replied to, greedy, at each evaluation "
                                                          "and by the base at step 0; 0 = off")


class DpoHyperparameters(TrainingHyperparameters, EvalSamples):
    full_finetuning: ClassVar[bool] = True

    beta: Union[Auto, float] = Field("auto", description="KL strength; auto = 0.1")
    loss_type: PreferenceLoss = "sigmoid"
    # Weighted sum of losses, e.g. {"sigmoid": 1.0, "sft": 0.1}; overrides loss_type when given.
    loss_weights: dict[PreferenceLoss, float] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="robust DPO / cDPO epsilon")
    simpo_gamma: float = Field(0.5, ge=0.0, le=10.0, description="SimPO target margin")

    @field_validator("beta")
    @classmethod
    def _beta(cls, v):
        if v != "auto" and not 0 < v <= 100:
            raise ValueError("beta must be 'auto' or a number in (0, 100]")
        return v

    @field_validator("loss_weights")
    @classmethod
    def _weights(cls, v):
        if v is not None and (not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError("loss_weights must be non-empty, non-negative and not all zero")
        return v

    @property
    def beta_value(self) -> float:
        return 0.1 if self.beta == "auto" else self.beta

    @property
    def weighted_losses(self) -> dict[str, float]:
        return dict(self.loss_weights) if self.loss_weights else {self.loss_type: 1.0}


class SupervisedHyperparameters(TrainingHyperparameters, EvalSamples):
    full_finetuning: ClassVar[bool] = True


class RewardSource(StrictModel):
    """Where online methods get their rewards. Never user code: names resolve on the operator side."""

    type: Literal["model", "job", "function"] = "function"
    name: str = Field("length_penalty", min_length=1, max_length=200,
                      description="registry model name, reward_model job id, or registered function name")


class UserSimulator(StrictModel):
    """Who plays the user in multi-turn rollouts."""

    type: Literal["model", "dataset"] = "model"
    model: str | None = Field(None, description="registry name; default: the job's base model")
    system_prompt: str | None = Field(None, max_length=8000)
    # The user's own sampling: its turns are not cut at the policy's reply length.
    max_new_tokens: int = Field(96, ge=1, le=8192)
    temperature: float = Field(0.7, gt=0, le=5.0)


class RolloutSampling(StrictModel):
    """How a method that collects its own data samples the assistant's replies and scores them."""

    temperature: float = Field(1.0, gt=0, le=5.0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    max_new_tokens: int = Field(64, ge=1, le=8192)
    reward: RewardSource = Field(default_factory=RewardSource)


class DialogueRollouts(StrictModel):
    """Multi-turn collection: how long a dialogue is and who plays the user."""

    num_turns: int = Field(3, ge=1, le=64, description="H: assistant turns per dialogue")
    user: UserSimulator = Field(default_factory=UserSimulator)


class OnlineHyperparameters(TrainingHyperparameters, RolloutSampling, EvalSamples):
    """REBEL and REFUEL: collect with pi_t, regress reward differences, repeat."""

    eta: float = Field(1.0, gt=0, le=1e4, description="scales the reward difference (paper: 1/eta on the log-ratio)")
    iterations: int = Field(2, ge=1, le=1000)
    rollouts_per_iteration: int = Field(8, ge=1, le=100000, description="prompts (REBEL) or dialogues (REFUEL)")
    kl_coef: float = Field(0.0, ge=0.0, le=100.0)
    eos_penalty: float = Field(0.0, le=0.0, ge=-100.0, description="added to R when a response does not finish")


class RebelHyperparameters(OnlineHyperparameters):
    pass


class RefuelHyperparameters(OnlineHyperparameters, DialogueRollouts):
    credit: Literal["future", "immediate"] = Field(
        "future", description="regression target of turn h: 'future' (REFUEL) the rewards from turn h to the end "
                              "of the dialogue; 'immediate' turn h's own reward: REBEL on REFUEL's collection, "
                              "the ablation that isolates REFUEL's credit assignment")


class DialogueDpoHyperparameters(DpoHyperparameters, RolloutSampling, DialogueRollouts):
    """The DPO baselines of multi-turn RLHF (`dpo_last_turn`, `dpo_multi_turn`): pairs of base-model
    dialogues collected once, preferred by return, then DPO (rlhf_engine/algorithms/dialogue_dpo.py)."""

    full_finetuning: ClassVar[bool] = False  # its collection samples the base through the disabled adapter

    rollouts: int = Field(
        16, ge=1, le=100000,
        description="dialogue seeds rolled out, one pair each; every pair costs 2 reward queries (one per "
                    "complete dialogue scored), as one REFUEL comparison does: the same budget as REFUEL's "
                    "iterations x rollouts_per_iteration")


class RewardModelHyperparameters(TrainingHyperparameters):
    pass


class _MethodBody(StrictModel):
    hyperparameters: Any = None


class DpoMethod(_MethodBody):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class SupervisedMethod(_MethodBody):
    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)


class RebelMethod(_MethodBody):
    hyperparameters: RebelHyperparameters = Field(default_factory=RebelHyperparameters)


class RefuelMethod(_MethodBody):
    hyperparameters: RefuelHyperparameters = Field(default_factory=RefuelHyperparameters)


class DpoLastTurnMethod(_MethodBody):
    hyperparameters: DialogueDpoHyperparameters = Field(default_factory=DialogueDpoHyperparameters)


class DpoMultiTurnMethod(_MethodBody):
    hyperparameters: DialogueDpoHyperparameters = Field(default_factory=DialogueDpoHyperparameters)


class RewardModelMethod(_MethodBody):
    hyperparameters: RewardModelHyperparameters = Field(default_factory=RewardModelHyperparameters)


MethodType = Literal["dpo", "supervised", "rebel", "refuel", "dpo_last_turn", "dpo_multi_turn", "reward_model"]
_BODIES = {"dpo": DpoMethod, "supervised": SupervisedMethod, "rebel": RebelMethod, "refuel": RefuelMethod,
           "dpo_last_turn": DpoLastTurnMethod, "dpo_multi_turn": DpoMultiTurnMethod,
           "reward_model": RewardModelMethod}

# Which dataset formats (see rlhf_engine/data/formats.py) each method can train on.
ACCEPTED_FORMATS: dict[str, tuple[str, ...]] = {
    "dpo": ("preference",),
    "supervised": ("preference", "chat"),
    "reward_model": ("preference",),
    "rebel": ("prompts", "preference", "chat"),
    "refuel": ("dialogues", "prompts", "preference", "chat"),
    "dpo_last_turn": ("dialogues", "prompts", "preference", "chat"),
    "dpo_multi_turn": ("dialogues", "prompts", "preference", "chat"),
}


class Method(StrictModel):
    """`{"type": T, T: {"hyperparameters": {...}}}`; the body for T may be omitted (defaults)."""

    type: MethodType
    dpo: DpoMethod | None = None
    supervised: SupervisedMethod | None = None
    rebel: RebelMethod | None = None
    refuel: RefuelMethod | None = None
    dpo_last_turn: DpoLastTurnMethod | None = None
    dpo_multi_turn: DpoMultiTurnMethod | None = None
    reward_model: RewardModelMethod | None = None

    @model_validator(mode="after")
    def _one_body(self):
        for name in _BODIES:
            if name != self.type and getattr(self, name) is not None:
                raise ValueError(f"method.{name} given but method.type is {self.type!r}")
        if getattr(self, self.type) is None:
            setattr(self, self.type, _BODIES[self.type]())
        return self

    @property
    def hyperparameters(self) -> TrainingHyperparameters:
        return getattr(self, self.type).hyperparameters

    def public_dict(self) -> dict:
        """The method as the API shows it: only the active body, every default filled in."""
        return {"type": self.type, self.type: getattr(self, self.type).model_dump(mode="json")}


class TrainConfig(StrictModel):
    """What the engine runs: the job-create body with file paths instead of file ids.

    The CLI reads this from YAML; the worker builds it from a job row.
    """

    model: str = Field(min_length=1, max_length=200)
    training_file: str
    validation_file: str | None = None
    seed: int = Field(42, ge=0, le=2**31 - 1)
    method: Method = Field(default_factory=lambda: Method(type="dpo"))
    output_dir: str = "runs/latest"
    # One precision for every forward of the job (rlhf_engine/precision.py): "auto" is bf16 autocast
    # on a CUDA device with bf16, fp32 elsewhere; "bf16" asks for bf16 autocast on any device.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # Attention for prefix-shared packed batches (rlhf_engine/attention.py): "flex" (CUDA only) runs
    # them through flex_attention with a block-sparse mask; "sdpa" through SDPA with a dense one.
    attention: Literal["sdpa", "flex"] = "sdpa"
    # Pairs (DPO, the reference pass, REBEL/REFUEL) packed prefix-shared and padding-free
    # (rlhf_engine/packing.py), or as two right-padded rows each: the same log-probs, less work.
    packing: bool = True
    # PEFT adapters on `model` that the job starts from (a chained job: SFT, then DPO on its
    # model). They are merged into the base weights before training, so they are also the
    # reference, and the exported adapter holds them and the new update together
    # (rlhf_engine/export.py), loading on `model` alone.
    init_adapters: list[str] = Field(default_factory=list)


__all__ = [
    "ACCEPTED_FORMATS", "DialogueDpoHyperparameters", "DialogueRollouts", "DpoHyperparameters", "EvalSamples",
    "LoraSpec",
    "Method", "MethodType", "OnlineHyperparameters", "RebelHyperparameters", "RefuelHyperparameters",
    "RewardModelHyperparameters", "RewardSource", "RolloutSampling", "SupervisedHyperparameters", "TrainConfig",
    "TrainingHyperparameters", "UserSimulator",
]

