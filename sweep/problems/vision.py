"""The image families (vae, diffusion) and their data source (images), as plugins.

Real images come from ``sweep.problems.images`` (scikit-learn's 8x8 digits by default, or
local idx / .npy / .npz / class folders) with one class made a minority; each generation the
model's samples are measured against the held-out real images in the feature space of a
small classifier trained once on the real data (``sweep.problems.image_metrics``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from models.base import Model
from sweep.config import ChainConfig, ConfigError, FamilyConfig, Section, SourceConfig
from sweep.problems.images import ImageSource
from sweep.problems.problem import Problem
from sweep.problems.registry import DataSource, Family, register_family, register_source

if TYPE_CHECKING:  # torch loads when a vision chain starts, not when its config is validated
    from sweep.problems.image_metrics import FeatureExtractor

#: Collapse metrics of the images source (all reported with ``<name>_se``).
IMAGE_METRICS = ("fd", "precision", "recall", "diversity", "class_tv", "minority_share")


# --------------------------------------------------------------------------- the source
class ImageData(SourceConfig):
    """Real images, offline: scikit-learn's 8x8 digits, or local idx / .npy / .npz / folders."""

    source: str = "images"
    path: str = Field(
        "builtin:digits", description="builtin:digits (1797 8x8 digits, 10 classes), an idx file "
        "or a folder of them (MNIST; Debian's dataset-fashion-mnist puts Fashion-MNIST in "
        "/usr/share/datasets/fashion-mnist), .npy, .npz, or a folder of class folders of images."
    )
    minority_class: int | None = Field(
        0, description="Label made a minority (its share of each split is minority_share); "
        "null keeps the data's own class shares."
    )
    minority_share: float = Field(0.05, gt=0, lt=1, description="Share of the minority class.")
    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="Images of each class held out (fixed split seed)."
    )
    max_images: int | None = Field(
        None, ge=20, description="Use at most this many images of the source (before splitting)."
    )
    test_size: int = Field(2000, ge=10, description="Most held-out images used for evaluation.")
    eval_samples: int = Field(
        2000, ge=50, le=100_000, description="Images sampled from each model per generation "
        "for the image metrics (measurement: not counted as compute)."
    )


@dataclass(frozen=True)
class ImageWorld:
    """What the image families' builders and metrics read from the problem."""

    dim: int
    shape: tuple[int, ...]
    extractor: FeatureExtractor
    test_labels: np.ndarray | None
    minority_class: int | None
    eval_samples: int


def _key(data: ImageData) -> tuple:
    return (data.path, data.minority_class, data.minority_share, data.test_fraction, data.max_images)


_SOURCES: dict[tuple, ImageSource] = {}


def image_source(data: ImageData) -> ImageSource:
    """The image source of a data config (cached per process); a bad path is a ConfigError."""
    key = _key(data)
    if key not in _SOURCES:
        try:
            _SOURCES[key] = ImageSource(data.path, minority_class=data.minority_class,
                                        minority_share=data.minority_share,
                                        test_fraction=data.test_fraction, max_images=data.max_images)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"data.path: {exc}") from None
    return _SOURCES[key]


def _images_problem(config: ChainConfig, rng: np.random.Generator) -> Problem:
    data = config.data
    assert isinstance(data, ImageData)
    source = image_source(data)
    test, labels = source.test()
    if len(test) > data.test_size:
        keep = np.sort(rng.choice(len(test), size=data.test_size, replace=False))
        test, labels = test[keep], None if labels is None else labels[keep]
    from sweep.problems.image_metrics import cached_extractor

    # The classifier sees the whole real train / test split (not this chain's D_0), so every
    # chain on this data config measures in the same feature space.
    extractor = cached_extractor(_key(data), *source.train(), *source.test())
    if labels is not None and data.minority_class is not None:
        tail = labels == data.minority_class  # the tail: the minority class's images
    else:
        tail = np.ones(len(test), dtype=bool)
    return Problem(real_train=source.sample_real(config.recursion.samples_per_generation, rng),
                   test=test, tail_mask=tail, draw_real=source.sample_real, truth=None,
                   family_data=ImageWorld(dim=source.dim, shape=source.shape, extractor=extractor,
                                          test_labels=labels, minority_class=data.minority_class,
                                          eval_samples=data.eval_samples))


IMAGES = register_source(DataSource(
    name="images", config=ImageData, problem=_images_problem, has_truth=False,
    metrics=IMAGE_METRICS))


def image_sample_metrics(model: Model, problem: Problem, rng: np.random.Generator
                         ) -> tuple[dict[str, float], np.ndarray]:
    """fd / precision / recall / diversity / class shares of ``eval_samples`` images against
    the held-out real images (+ ``_se``), and the images as (n, H, W) for TensorBoard."""
    from sweep.problems.image_metrics import image_metrics

    world: ImageWorld = problem.family_data
    images = model.sample(world.eval_samples, rng)
    out = image_metrics(images, problem.test, world.extractor, real_labels=world.test_labels,
                        minority_class=world.minority_class, rng=np.random.default_rng(len(images)))
    return out, images.reshape(len(images), *world.shape)


# --------------------------------------------------------------------------- vae
class ImageTrain(Section):
    """How an image model is trained each generation."""

    lr: float = Field(3e-3, gt=0, description="Adam peak learning rate (cosine decay to lr / 10).")
    batch_size: int = Field(64, ge=1, description="Images per optimisation step.")
    epochs: float = Field(
        40.0, gt=0, description="Budget: passes over this generation's training set (default)."
    )
    steps: int | None = Field(
        None, ge=1, description="If set, exactly this many optimisation steps per generation "
        "(a fixed budget whatever the training-set size) instead of `epochs`."
    )
    grad_clip: float = Field(5.0, ge=0, description="Gradient norm clip (0 disables).")


class VAEModelCfg(FamilyConfig):
    """An MLP variational autoencoder over flattened images (models/vae.py)."""

    family: str = "vae"
    size: Literal["xs", "s", "m", "l", "xl"] = Field(
        "s", description="Named size (hidden width, layers, latent): xs (64, 1, 4) ... "
        "xl (1024, 3, 64); overridden by the explicit fields below."
    )
    hidden: int | None = Field(None, ge=1, description="Explicit hidden width.")
    layers: int | None = Field(None, ge=1, description="Explicit hidden layers per side.")
    latent: int | None = Field(None, ge=1, description="Explicit latent dimension.")
    min_sigma: float = Field(0.05, gt=0, description="Floor of the decoder's per-pixel std.")
    iw_samples: int = Field(
        8, ge=1, le=1024, description="K of the importance-weighted bound log_prob returns "
        "(1 = the ELBO); scoring costs K decoder passes per image."
    )
    train: ImageTrain = Field(default_factory=ImageTrain, description="Training per generation.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses the GPU Ray assigned (cuda) when present, else cpu."
    )


def _dataclass(cls: type, values: dict[str, Any], **extra: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**values, **extra}.items() if k in names})


def build_vae(m: VAEModelCfg, problem: Problem, rng: np.random.Generator) -> Model:
    from models.vae import VAEModel, VAETrainConfig

    world: ImageWorld = problem.family_data
    try:
        return VAEModel(dim=world.dim, size=m.size, hidden=m.hidden, layers=m.layers,
                        latent=m.latent, min_sigma=m.min_sigma,
                        train=_dataclass(VAETrainConfig, m.train.model_dump(), iw_samples=m.iw_samples),
                        device=None if m.device == "auto" else m.device,
                        seed=int(rng.integers(2**31 - 1)))
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None


VAE = register_family(Family(
    name="vae", config=VAEModelCfg, title="VAE", build=build_vae,
    sample_metrics=image_sample_metrics, sources=("images",),
    size_axes=("size", "hidden", "latent")))


# --------------------------------------------------------------------------- diffusion
class DiffusionTrain(ImageTrain):
    """How a DDPM is trained each generation."""

    lr: float = Field(2e-3, gt=0, description="Adam peak learning rate (cosine decay to lr / 10).")
    batch_size: int = Field(128, ge=1, description="Images per optimisation step.")
    epochs: float = Field(
        100.0, gt=0, description="Budget: passes over this generation's training set (default)."
    )
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip (0 disables).")
    ema: float = Field(
        0.995, ge=0, lt=1, description="Decay of the weight average that samples and scores (0 off)."
    )


class DiffusionModelCfg(FamilyConfig):
    """A small DDPM with a residual-MLP noise predictor (models/diffusion.py)."""

    family: str = "diffusion"
    size: Literal["xs", "s", "m", "l", "xl"] = Field(
        "xs", description="Named size (hidden width, residual blocks): xs (64, 2) ... "
        "xl (1024, 4); overridden by the explicit fields below."
    )
    hidden: int | None = Field(None, ge=1, description="Explicit hidden width.")
    blocks: int | None = Field(None, ge=1, description="Explicit residual blocks.")
    timesteps: int = Field(200, ge=2, le=4000, description="T of the forward (noising) process.")
    sample_steps: int | None = Field(
        None, ge=1, description="Respaced sampling steps S <= T (None: all T); sampling costs S "
        "network passes per image."
    )
    elbo_steps: int | None = Field(
        None, ge=2, description="Terms of the variational bound log_prob evaluates (log-spaced; "
        "None: all T); scoring costs that many passes per image."
    )
    train: DiffusionTrain = Field(default_factory=DiffusionTrain, description="Training per generation.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses the GPU Ray assigned (cuda) when present, else cpu."
    )

    @model_validator(mode="after")
    def _steps_within_t(self) -> DiffusionModelCfg:
        for name in ("sample_steps", "elbo_steps"):
            value = getattr(self, name)
            if value is not None and value > self.timesteps:
                raise ValueError(f"model.{name}: {value} is more than timesteps ({self.timesteps})")
        return self


def build_diffusion(m: DiffusionModelCfg, problem: Problem, rng: np.random.Generator) -> Model:
    from models.diffusion import DiffusionModel, DiffusionTrainConfig

    world: ImageWorld = problem.family_data
    train = _dataclass(DiffusionTrainConfig, m.train.model_dump(), sample_steps=m.sample_steps,
                       elbo_steps=m.elbo_steps)
    try:
        return DiffusionModel(dim=world.dim, size=m.size, hidden=m.hidden, blocks=m.blocks,
                              timesteps=m.timesteps, train=train,
                              device=None if m.device == "auto" else m.device,
                              seed=int(rng.integers(2**31 - 1)))
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None


def _diffusion_stats(model: Model, problem: Problem) -> dict[str, float]:
    """The model's summary and its denoising loss on the held-out real images (+ _se)."""
    per_item = model.denoise_loss(problem.test)  # type: ignore[attr-defined]
    return {**model.summary(), "denoise_loss": float(per_item.mean()),
            "denoise_loss_se": float(per_item.std(ddof=1) / np.sqrt(len(per_item)))}


DIFFUSION = register_family(Family(
    name="diffusion", config=DiffusionModelCfg, title="DDPM", build=build_diffusion,
    stats=_diffusion_stats, sample_metrics=image_sample_metrics, sources=("images",),
    metrics=("denoise_loss",), size_axes=("size", "hidden", "blocks")))
