"""The one typed, validated configuration of the pipeline, loaded from YAML.

Precedence, lowest to highest: defaults here < the YAML file < environment variables
(`ANT_HOME`, `ANT_AMAZON_2018_URL`, `ANT_AMAZON_2023_URL`) < command-line flags.
Every default from the method spec (`docs` in the README) is a field here, never a literal in code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from warehouse.sources import DEFAULT_BASE_URLS, check_categories

ENV_HOME = "ANT_HOME"
ENV_URL = {"2018": "ANT_AMAZON_2018_URL", "2023": "ANT_AMAZON_2023_URL"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sources(_Section):
    """Where the raw files come from: http(s)://, file:// or a plain local directory."""

    amazon_2018_url: str = DEFAULT_BASE_URLS["2018"]
    amazon_2023_url: str = DEFAULT_BASE_URLS["2023"]
    # 2018 publishes a pre-filtered 5-core review file per category; "all" takes the full file.
    # 2023 always uses the raw review file (our own k-core filter does the rest).
    reviews_2018: Literal["5core", "all"] = "5core"

    def base_url(self, release: str) -> str:
        return self.amazon_2018_url if release == "2018" else self.amazon_2023_url


class Download(_Section):
    timeout_s: float = Field(60.0, gt=0, description="connect/read timeout of one request")
    retries: int = Field(3, ge=0, description="task-level retries on transient network errors")
    retry_delay_s: float = Field(5.0, ge=0)
    revalidate_after_h: float = Field(
        24.0, ge=0, description="downloads are re-validated with the host once per period of this "
                                "many hours (0: on every run)")


class Filtering(_Section):
    """How raw reviews become clean sequences (ant-method.md, 'Data the paper uses')."""

    k_core: int = Field(5, ge=1, description="iterative k-core on users and items")
    max_seq_len: int = Field(50, ge=1, description="L: last items a model sees")
    text_max_chars: int = Field(1000, ge=16, description="bound on the cleaned item text")
    max_images: int = Field(4, ge=0, description="image URLs kept per item")
    price_max: float = Field(100_000.0, gt=0, description="prices above this are treated as junk")


class Ingest(_Section):
    parallel_domains: int = Field(2, ge=1, description="categories parsed side by side (gzip is single-threaded)")
    duckdb_threads: int | None = Field(
        None, ge=1, description="threads per category; default: CPU cores / parallel_domains")
    duckdb_memory_limit: str = "2GB"
    max_line_bytes: int = Field(64 << 20, gt=0, description="longest JSON line accepted")


    def threads_per_domain(self) -> int:
        return self.duckdb_threads or max(1, (os.cpu_count() or 1) // self.parallel_domains)


class TextEncoderConfig(_Section):
    """Frozen text encoder over `items.text` (ant-method.md, 'Item features')."""

    kind: Literal["open_clip", "transformers"] = "open_clip"
    # open_clip: a built-in name ("ViT-B-32") or "local-dir:/dir"; transformers: a hub id or a
    # local directory (a sentence-transformers directory works, with pooling "mean").
    model: str = "ViT-B-32"
    # open_clip only: a pretrained tag ("laion2b_s34b_b79k"), a local weights file, or null
    # for random weights.
    pretrained: str | None = "laion2b_s34b_b79k"
    pooling: Literal["cls", "mean"] = "cls"
    max_tokens: int = Field(128, ge=8, description="transformers: longer texts are truncated")
    batch_size: int = Field(128, ge=1)


class ImageEncoderConfig(_Section):
    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    batch_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=0, description="DataLoader processes decoding images")


class ImageFetchConfig(_Section):
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, description="per image, on timeouts and 5xx only")
    max_bytes: int = Field(10 << 20, gt=0, description="larger files are refused")
    max_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard")
    # Prefix rewrites for image URLs, e.g. {"https://images-na.ssl-images-amazon.com/": "http://mirror/"}.
    url_rewrite: dict[str, str] = Field(default_factory=dict)


class PriceEncoderConfig(_Section):
    dim: int = Field(64, ge=4, description="width of the price vector")
    min_frequency: float = Field(0.1, gt=0)
    max_frequency: float = Field(10.0, gt=0)
    n_quantiles: int = Field(1000, ge=2, description="resolution of the within-domain percentile")

    @model_validator(mode="after")
    def _even(self) -> "PriceEncoderConfig":
        if self.dim % 2:
            raise ValueError("price dim must be even: [z, percentile, sin/cos pairs]")
        return self


class Features(_Section):
    text: TextEncoderConfig = TextEncoderConfig()
    image: ImageEncoderConfig = ImageEncoderConfig()
    fetch: ImageFetchConfig = ImageFetchConfig()
    price: PriceEncoderConfig = PriceEncoderConfig()
    device: str = Field("auto", description='"auto" (CUDA when present), "cpu", "cuda", "cuda:1"...')


class ModelConfig(_Section):
    """ANT's architecture (ant-method.md, 'Item encoder' and 'Sequence encoder')."""

    width: int = Field(256, ge=8, description="d: model width")
    n_experts: int = Field(8, ge=1, description="E: experts per modality adaptor")
    adaptor_dropout: float = Field(0.2, ge=0, lt=1)
    fusion_beta: float = Field(0.1, description="weight of the image ⊙ text term")
    modalities: list[Literal["text", "image", "price"]] = ["text", "image", "price"]
    fusion_product: bool = True
    moe: bool = Field(True, description="False: one linear layer per modality instead of the MoE")
    item_ids: bool = Field(False, description="transductive: add a per-target item-ID embedding")
    max_seq_len: int = Field(50, ge=1, description="L")
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    ffn_width: int = Field(256, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1, description="hidden and attention dropout")
    embedding_dropout: float = Field(0.5, ge=0, lt=1)
    temperature: float = Field(0.07, gt=0, description="tau of the cosine scores")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if not self.modalities and not self.item_ids:
            raise ValueError("an item needs at least one modality (or item_ids)")
        return self


class TrainConfig(_Section):
    """One training run; pretrain and adapt each have their own (ant-method.md defaults)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(2048, ge=1, description="sequences per batch")
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_gamma: float = Field(0.99, gt=0, le=1, description="StepLR gamma, per epoch")
    grad_clip: float | None = Field(5.0, gt=0)
    align_weight: float = Field(0.001, ge=0, description="weight of L_align (pretraining)")
    patience: int = Field(10, ge=1, description="epochs without a better validation R@10")
    eval_batch_size: int = Field(1024, ge=1)
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="CUDA only")
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    deterministic: bool = False
    seed: int = 0
    device: str = "auto"
    cpu_threads: int | None = Field(None, ge=1, description="default: all cores")


class Orchestration(_Section):
    """How Prefect runs the tasks, and how runs on one ANT_HOME take turns."""

    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="where per-domain features and per-target adaptation run")
    workers: int = Field(1, ge=1, description="tasks at once; each training task uses every core it gets")
    dask_address: str | None = Field(
        None, description="scheduler of a running Dask cluster; default: a local cluster of `workers` processes")
    pretrain_processes: int = Field(
        1, ge=1, description="> 1: pre-train under torchrun with this many processes (one per GPU, DDP)")
    lock_timeout_s: float = Field(
        3600.0, ge=0, description="how long a second run on the same ANT_HOME waits before it gives up")


def _pretrain_defaults() -> TrainConfig:
    return TrainConfig(epochs=300, lr_gamma=0.995)


class AntConfig(_Section):
    home: Path = Path("ant-data")
    release: Literal["2018", "2023"] = "2018"
    auxiliary: list[str] = Field(default_factory=list, description="pre-training categories")
    targets: list[str] = Field(default_factory=list, description="adaptation categories")
    sources: Sources = Sources()
    download: Download = Download()
    filtering: Filtering = Filtering()
    ingest: Ingest = Ingest()
    features: Features = Features()
    model: ModelConfig = ModelConfig()
    pretrain: TrainConfig = Field(default_factory=_pretrain_defaults)
    adapt: TrainConfig = TrainConfig()
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds when comparing methods")
    orchestration: Orchestration = Orchestration()

    @model_validator(mode="after")
    def _known_categories(self) -> "AntConfig":
        check_categories(self.release, [*self.auxiliary, *self.targets])
        return self

    @property
    def categories(self) -> list[str]:
        """Auxiliary then target categories, each once."""
        return list(dict.fromkeys([*self.auxiliary, *self.targets]))

    def with_overrides(self, **changes) -> "AntConfig":
        """A validated copy with top-level fields replaced (None values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return AntConfig.model_validate(data)


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names the file."""


def _merge(base: dict, changes: dict) -> None:
    """Nested update: {"adapt": {"epochs": 3}} changes one field, keeps the section's others."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_config(path: str | Path | None = None, **overrides) -> AntConfig:
    """Read YAML (or defaults when `path` is None), apply the environment, then `overrides`."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
    if os.environ.get(ENV_HOME):
        data["home"] = os.environ[ENV_HOME]
    sources = dict(data.get("sources") or {})
    for release, var in ENV_URL.items():
        if os.environ.get(var):
            sources[f"amazon_{release}_url"] = os.environ[var]
    if sources:
        data["sources"] = sources
    _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return AntConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path or '(defaults)'}:\n{exc}") from exc
