"""The backbone registry: what each TF Hub feature extractor expects and provides.

A :class:`Backbone` is a frozen record. Override a field with
``dataclasses.replace(get_backbone("mobilenet_v2"), handle="/models/mnv2")``; never
mutate. The registry is an object so tests (and applications) can hold their own.
This module does not import TensorFlow.
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from hubtransfer.errors import ConfigurationError, UnknownBackboneError

__all__ = [
    "Backbone",
    "BackboneRegistry",
    "HubFormat",
    "backbones_markdown",
    "default_registry",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "resolve_backbone",
    "suggest_fine_tunable",
]

HubFormat = Literal["tf1", "tf2"]
_HUB_FORMATS: tuple[str, ...] = get_args(HubFormat)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_REMOTE_HANDLE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Backbone:
    """A pretrained image feature extractor and the contract it keeps.

    Attributes:
        name: Registry key, e.g. ``"mobilenet_v2"``.
        handle: TF Hub / Kaggle URL, or a local directory holding a SavedModel.
        image_size: Square input side in pixels that the model was trained at.
        feature_dim: Length of the pooled feature vector the model returns.
        hub_format: ``"tf1"`` (legacy hub.Module, ``tfhub_module.pb``) or ``"tf2"``.
        fine_tunable: Whether its weights can be trained (never for TF1 modules).
        input_range: Pixel value range the model expects, ``(low, high)``.
        params: Parameter count of the feature extractor, where known.
        family: Architecture family, e.g. ``"efficientnet"``.
        gflops: Multiply-adds per image in billions, as the architecture's paper reports.
        imagenet_top1: ImageNet top-1 accuracy (%) of the full classifier, as reported.
        reference: Where the metadata comes from.
    """

    # Where the model lives.
    name: str
    handle: str
    # Input and output contract.
    image_size: int
    feature_dim: int
    # Format, and therefore whether gradients can flow into the backbone.
    hub_format: HubFormat
    fine_tunable: bool
    input_range: tuple[float, float] = (0.0, 1.0)
    # Reference metadata: informative only, never used for computation.
    params: int | None = None
    family: str = ""
    gflops: float | None = None
    imagenet_top1: float | None = None
    reference: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                "Backbone name must be letters, digits, '_', '-' or '.', starting with a "
                "letter or digit (it becomes part of file names), e.g. 'mobilenet_v2_local'. "
                f"Received: name={self.name!r}."
            )
        if not self.handle:
            raise ConfigurationError(
                f"Backbone {self.name!r} needs a handle: a TF Hub URL or a local SavedModel "
                f"directory. Received: handle={self.handle!r}."
            )
        if self.hub_format not in _HUB_FORMATS:
            raise ConfigurationError(
                f"Backbone {self.name!r}: hub_format must be one of {_HUB_FORMATS}. "
                f"Received: hub_format={self.hub_format!r}."
            )
        for field in ("image_size", "feature_dim"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"Backbone {self.name!r}: {field} must be a positive integer. "
                    f"Received: {field}={value!r}."
                )
        low, high = self.input_range
        if not low < high:
            raise ConfigurationError(
                f"Backbone {self.name!r}: input_range must be (low, high) with low < high, "
                f"e.g. (0.0, 1.0) or (-1.0, 1.0). Received: input_range={self.input_range!r}."
            )
        object.__setattr__(self, "input_range", (float(low), float(high)))
        if self.hub_format == "tf1" and self.fine_tunable:
            raise ConfigurationError(
                f"Backbone {self.name!r} is declared hub_format='tf1' and fine_tunable=True, "
                "but TF1 Hub modules cannot be fine-tuned. Set fine_tunable=False, or "
                "hub_format='tf2' if the model is a TF2 SavedModel."
            )

    @property
    def is_remote(self) -> bool:
        """True when the handle is a URL (it will be downloaded and cached)."""
        return bool(_REMOTE_HANDLE.match(self.handle))


class BackboneRegistry:
    """A name -> :class:`Backbone` mapping with pattern listing and helpful lookups."""

    def __init__(self, backbones: Iterable[Backbone] = ()) -> None:
        self._backbones: dict[str, Backbone] = {}
        for backbone in backbones:
            self.register(backbone)

    def register(self, backbone: Backbone, *, overwrite: bool = False) -> Backbone:
        """Adds ``backbone``; a taken name raises unless ``overwrite=True``."""
        if not isinstance(backbone, Backbone):
            raise ConfigurationError(
                "register_backbone() takes a hubtransfer.Backbone. "
                f"Received: {type(backbone).__name__}."
            )
        if backbone.name in self._backbones and not overwrite:
            raise ConfigurationError(
                f"A backbone named {backbone.name!r} is already registered. Pass "
                "overwrite=True to replace it, or choose another name."
            )
        self._backbones[backbone.name] = backbone
        return backbone

    def get(self, name: str) -> Backbone:
        """Returns the backbone called ``name``.

        Raises:
            UnknownBackboneError: No such name; the message suggests the closest ones.
        """
        try:
            return self._backbones[name]
        except (KeyError, TypeError):
            pass
        close = self._closest(str(name))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownBackboneError(
            f"Unknown backbone {name!r}.{hint} {len(self)} backbones are registered: see "
            "`hubtransfer backbones` or hubtransfer.list_backbones(), or add yours with "
            "hubtransfer.register_backbone(Backbone(...))."
        )

    def list(self, pattern: str | None = None) -> builtins.list[Backbone]:
        """Backbones whose name matches the glob ``pattern`` (case-insensitive), by name."""
        names = sorted(self._backbones)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
        return [self._backbones[n] for n in names]

    def copy(self) -> BackboneRegistry:
        """An independent registry holding the same entries."""
        return BackboneRegistry(self._backbones.values())

    def _closest(self, name: str) -> builtins.list[str]:
        lowered = {n.lower(): n for n in self._backbones}
        key = name.lower().replace("-", "_")
        matches = difflib.get_close_matches(key, list(lowered), n=3, cutoff=0.6)
        prefix = [n for n in sorted(lowered) if n.startswith(key) and n not in matches]
        return [lowered[m] for m in (matches + prefix)[:3]]

    def __contains__(self, name: object) -> bool:
        return name in self._backbones

    def __iter__(self) -> Iterator[Backbone]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._backbones)


_HUB = "https://tfhub.dev"
_EFFNET_PAPER = "Tan & Le 2019, EfficientNet, Table 2"
_EFFNETV2_PAPER = "Tan & Le 2021, EfficientNetV2, Table 7"
# (size, feature_dim, params without top as keras.applications builds them, GFLOPs, top-1)
_EFFICIENTNET = {
    0: (224, 1280, 4_049_571, 0.39, 77.1),
    1: (240, 1280, 6_575_239, 0.70, 79.1),
    2: (260, 1408, 7_768_569, 1.0, 80.1),
    3: (300, 1536, 10_783_535, 1.8, 81.6),
    4: (380, 1792, 17_673_823, 4.2, 82.9),
    5: (456, 2048, 28_513_527, 9.9, 83.6),
    6: (528, 2304, 40_960_143, 19.0, 84.0),
    7: (600, 2560, 64_097_687, 37.0, 84.3),
}
_EFFICIENTNETV2 = {
    "b0": (224, 1280, 5_919_312, 0.72, 78.7),
    "b1": (240, 1280, 6_931_124, 1.2, 79.8),
    "b2": (260, 1408, 8_769_374, 1.7, 80.5),
    "b3": (300, 1536, 12_930_622, 3.0, 82.1),
    "s": (384, 1280, 20_331_360, 8.8, 83.9),
    "m": (480, 1280, 53_150_388, 24.0, 85.1),
    "l": (480, 1280, 117_746_848, 53.0, 85.7),
}


def _builtin_backbones() -> list[Backbone]:
    entries: list[Backbone] = []
    for i, (size, dim, params, gflops, top1) in _EFFICIENTNET.items():
        # The report's handles: TF1 hub.Module format, cannot be fine-tuned.
        entries.append(
            Backbone(
                f"efficientnet_b{i}",
                f"{_HUB}/google/efficientnet/b{i}/feature-vector/1",
                size,
                dim,
                "tf1",
                False,
                params=params,
                family="efficientnet",
                gflops=gflops,
                imagenet_top1=top1,
                reference=_EFFNET_PAPER,
            )
        )
        entries.append(
            Backbone(
                f"efficientnet_b{i}_tf2",
                f"{_HUB}/tensorflow/efficientnet/b{i}/feature-vector/1",
                size,
                dim,
                "tf2",
                True,
                params=params,
                family="efficientnet",
                gflops=gflops,
                imagenet_top1=top1,
                reference=_EFFNET_PAPER,
            )
        )
    for variant, (size, dim, params, gflops, top1) in _EFFICIENTNETV2.items():
        entries.append(
            Backbone(
                f"efficientnetv2_{variant}",
                f"{_HUB}/google/imagenet/efficientnet_v2_imagenet1k_{variant}/feature_vector/2",
                size,
                dim,
                "tf2",
                True,
                params=params,
                family="efficientnetv2",
                gflops=gflops,
                imagenet_top1=top1,
                reference=_EFFNETV2_PAPER,
            )
        )
    entries += [
        Backbone(
            "mobilenet_v2",
            f"{_HUB}/google/imagenet/mobilenet_v2_100_224/feature_vector/4",
            224,
            1280,
            "tf2",
            True,
            params=2_257_984,
            family="mobilenet",
            gflops=0.30,
            imagenet_top1=72.0,
            reference="Sandler et al. 2018, MobileNetV2",
        ),
        Backbone(
            "mobilenet_v3_small",
            f"{_HUB}/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5",
            224,
            1024,
            "tf2",
            True,
            params=1_529_968,
            family="mobilenet",
            gflops=0.056,
            imagenet_top1=67.4,
            reference="Howard et al. 2019, MobileNetV3",
        ),
        Backbone(
            "mobilenet_v3_large",
            f"{_HUB}/google/imagenet/mobilenet_v3_large_100_224/feature_vector/5",
            224,
            1280,
            "tf2",
            True,
            params=4_226_432,
            family="mobilenet",
            gflops=0.219,
            imagenet_top1=75.2,
            reference="Howard et al. 2019, MobileNetV3",
        ),
        Backbone(
            "resnet50_v2",
            f"{_HUB}/google/imagenet/resnet_v2_50/feature_vector/5",
            224,
            2048,
            "tf2",
            True,
            params=23_564_800,
            family="resnet",
            gflops=4.1,
            imagenet_top1=76.0,
            reference="He et al. 2016, Identity Mappings",
        ),
        Backbone(
            "inception_v3",
            f"{_HUB}/google/imagenet/inception_v3/feature_vector/5",
            299,
            2048,
            "tf2",
            True,
            params=21_802_784,
            family="inception",
            gflops=5.7,
            imagenet_top1=77.9,
            reference="Szegedy et al. 2016, Inception-v3",
        ),
        Backbone(
            # BiT accepts any input size; 224 is the size it is usually fine-tuned at.
            "bit_s_r50x1",
            f"{_HUB}/google/bit/s-r50x1/1",
            224,
            2048,
            "tf2",
            True,
            family="bit",
            reference="Kolesnikov et al. 2020, Big Transfer (BiT)",
        ),
    ]
    return entries


_DEFAULT = BackboneRegistry(_builtin_backbones())


def default_registry() -> BackboneRegistry:
    """The process-wide registry that the module-level functions use."""
    return _DEFAULT


def list_backbones(pattern: str | None = None) -> list[Backbone]:
    """Registered backbones, sorted by name, optionally filtered by a glob.

    Example: ``list_backbones("efficientnet_b*")``.
    """
    return _DEFAULT.list(pattern)


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name`` (raises UnknownBackboneError)."""
    return _DEFAULT.get(name)


def register_backbone(backbone: Backbone, *, overwrite: bool = False) -> Backbone:
    """Adds ``backbone`` to the default registry and returns it."""
    return _DEFAULT.register(backbone, overwrite=overwrite)


def resolve_backbone(
    backbone: str | Backbone, registry: BackboneRegistry | None = None
) -> Backbone:
    """A Backbone from a Backbone or a registered name."""
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, str):
        return (registry or _DEFAULT).get(backbone)
    raise ConfigurationError(
        "A backbone must be a registered name (str) or a hubtransfer.Backbone. "
        f"Received: {type(backbone).__name__}."
    )


def suggest_fine_tunable(backbone: Backbone, registry: BackboneRegistry | None = None) -> str:
    """The name of a fine-tunable backbone closest to ``backbone`` (same family first)."""
    reg = registry or _DEFAULT
    candidates = [b for b in reg.list() if b.fine_tunable and b.name != backbone.name]
    same_arch = [
        b
        for b in candidates
        if b.family == backbone.family
        and b.image_size == backbone.image_size
        and b.feature_dim == backbone.feature_dim
    ]
    same_family = [b for b in candidates if b.family and b.family == backbone.family]
    for group in (same_arch, same_family):
        if group:
            return min(group, key=lambda b: len(b.name)).name
    return "mobilenet_v2"


def backbones_markdown(backbones: Iterable[Backbone] | None = None) -> str:
    """The registry as a Markdown table (what ``hubtransfer backbones --markdown`` prints)."""
    rows = [
        "| name | format | fine-tunable | size | features | params | GFLOPs | top-1 % | handle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in backbones if backbones is not None else _DEFAULT.list():
        rows.append(
            f"| {b.name} | {b.hub_format} | {'yes' if b.fine_tunable else 'no'} | "
            f"{b.image_size} | {b.feature_dim} | {f'{b.params:,}' if b.params else '-'} | "
            f"{b.gflops if b.gflops is not None else '-'} | "
            f"{b.imagenet_top1 if b.imagenet_top1 is not None else '-'} | `{b.handle}` |"
        )
    return "\n".join(rows) + "\n"
