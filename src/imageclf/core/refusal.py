"""Every "no answer" decision, in one place: each refusal has a code (an enum) and its sentence.

Field level (:func:`judge_fields`, on the exact pixels the model saw): the colour check first
(not a stained tissue image: nothing the model says means anything), then the feature check
(stained, but not the tissue it learned), then the tissue gate when the model has one (tissue it
judges not to be lung: a same-lab organ the feature check lets through), then the confidence floor.

Image level: the scale (:func:`judge_scale`: no nuclei to measure, or a magnification outside
what the model learned), one field covering too small or large an area (:func:`judge_field_size`),
and the merge of the fields (:func:`judge_image`: no tissue, too large a share of fields refused,
or fields that disagree below the confidence floor).

The colour palette, bounds and confidence floor are fitted by ``training.calibration.abstention``
the feature threshold by ``training.calibration.feature_ood`` and the gate's by
``training.gate.arms.LogisticGate``; this module only applies them.
For data where a stain check makes no sense (CT, X-ray) the rule's method is ``"softmax"``
(confidence only) or ``"none"`` (never abstain).

Example:
    >>> rule = RefusalRule(abstain=AbstainRule.from_dict(config["abstain"]), feature_threshold=41.2)
    >>> judge_fields(fields, probabilities, feature_scores, rule, gate_scores)   # one code (or None) per field
    [None, <Reason.COLOUR: 'colour'>]
    >>> Reason.COLOUR.sentence()
    'Its colours are unlike those of the images the model was trained on (colour check).'
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from imageclf.core.colour import ColourCheck, colour_features, colour_outside

if TYPE_CHECKING:  # types only
    from imageclf.core.scale import ScaleDecision, ScaleSpec
    from imageclf.core.stain import StainEstimate, StainSpec

VERSION = 1
METHODS = ("colour+softmax", "colour", "softmax", "none")
ABSTAIN_SHARE = 0.5   # at least this share of tissue fields refused: the image is refused
MAX_MISMATCH = 3.0    # one field shown at > 3x (or < 1/3x) its estimated scale: refuse, don't guess
MIN_TISSUE = 0.25     # share of tissue pixels a field needs, unless the fitted colour check says otherwise


class Reason(Enum):
    """Why there is no answer. ``value`` is the code clients see (JSON ``abstain_code``); the
    template, filled with the refusal's numbers, is the sentence people see (``abstain_reason``)."""

    # Worded for any dataset: each check is fitted to whatever images the model was trained on.
    COLOUR = ("colour", "Its colours are unlike those of the images the model was trained on (colour check).")
    FEATURE = ("feature", "It does not look like the tissue the model was trained on (feature check): another "
                          "organ, another kind of image or an unusual preparation.")
    # The one check worded for the lung model: it is fitted lung against one lab's colon (docs/tissue-gate.md).
    ORGAN = ("organ", "It does not look like lung tissue (tissue gate: lung against same-lab colon); other organs are "
                      "refused only in part, see the model card.")
    CONFIDENCE = ("confidence", "The model is not confident enough that this is one of its classes.")
    SCALE_UNKNOWN = ("scale_unknown", "the scale could not be estimated: no stained nuclei were found")
    MAGNIFICATION_TOO_LOW = ("magnification_too_low", "the magnification is far below what the model learned "
                                                      "(nuclei about {ratio:.1f}x smaller than in training)")
    MAGNIFICATION_TOO_HIGH = ("magnification_too_high", "the magnification is far above what the model learned "
                                                        "(nuclei about {ratio:.1f}x larger than in training)")
    AREA_TOO_SMALL = ("area_too_small", "the image covers too small an area for one field at the model's scale "
                                        "(cells would be shown {shown:.1f}x their training size)")
    AREA_TOO_LARGE = ("area_too_large", "the image covers too large an area for one field at the model's scale "
                                        "(cells would be shown {shown:.1f}x their training size)")
    STAIN = ("stain", "Its stains could not be estimated (too little tissue, or one stain only), so it could not "
                      "be brought to the model's reference stains.")
    NO_TISSUE = ("no_tissue", "No tissue found: every field looks like background (blank or black).")
    FIELDS_REFUSED = ("fields_refused", "{refused} of {fields} tissue fields were not recognised{most_often}.")
    FIELDS_DISAGREE = ("fields_disagree", "The {answered} tissue fields disagree: no class reaches the model's "
                                          "confidence floor on average.")

    def __new__(cls, code: str, template: str) -> Reason:
        member = object.__new__(cls)
        member._value_ = code
        member.template = template
        return member

    def phrase(self, **values: Any) -> str:
        """The template filled in, as written (the scale reasons are lower-case phrases)."""
        return self.template.format(**values)

    def sentence(self, **values: Any) -> str:
        """One sentence: capitalised, ending with a full stop."""
        text = self.phrase(**values).strip()
        return text[0].upper() + text[1:].rstrip(".") + "."


@dataclass(frozen=True)
class Refusal:
    """One refusal: its code and the numbers its sentence needs."""

    reason: Reason
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.reason.value

    @property
    def phrase(self) -> str:
        return self.reason.phrase(**self.values)

    @property
    def sentence(self) -> str:
        return self.reason.sentence(**self.values)


@dataclass(frozen=True)
class AbstainRule:
    """The fitted colour check and confidence floor, as stored under ``"abstain"`` in config.json.

    Example:
        >>> AbstainRule(method="softmax", min_confidence=0.62).to_dict()["method"]
        'softmax'
    """

    method: str = "none"
    min_confidence: float | None = None  # abstain when the top probability is below this
    colour: ColourCheck | None = None
    version: int = VERSION
    fitted: dict[str, Any] = field(default_factory=dict)  # provenance: set, size, val rates

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown abstain method {self.method!r}; choose from {METHODS}.")
        if self.uses_colour and self.colour is None:
            raise ValueError(f"Method {self.method!r} needs a fitted colour check.")
        if self.uses_softmax and not (self.min_confidence is not None and 0.0 <= self.min_confidence <= 1.0):
            raise ValueError(f"Method {self.method!r} needs min_confidence in [0, 1].")

    @property
    def uses_colour(self) -> bool:
        return self.method in ("colour+softmax", "colour")

    @property
    def uses_softmax(self) -> bool:
        return self.method in ("colour+softmax", "softmax")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, "min_confidence": self.min_confidence,
                "colour": self.colour.to_dict() if self.colour else None, "fitted": dict(self.fitted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AbstainRule:
        """Read a rule; ``None`` or an empty dict is the disabled rule."""
        if not data:
            return cls()
        version = int(data.get("version", VERSION))
        if version > VERSION:
            raise ValueError(f"Abstain rule version {version} is newer than this code ({VERSION}).")
        colour = data.get("colour")
        confidence = data.get("min_confidence")
        return cls(method=str(data.get("method", "none")),
                   min_confidence=None if confidence is None else float(confidence),
                   colour=ColourCheck.from_dict(colour) if colour else None,
                   version=version, fitted=dict(data.get("fitted") or {}))


@dataclass(frozen=True)
class RefusalRule:
    """Everything a refusal is decided from: the fitted checks of one model plus the fixed shares."""

    abstain: AbstainRule = field(default_factory=AbstainRule)
    feature_threshold: float | None = None   # None: the model has no feature check
    gate_threshold: float | None = None      # None: no tissue gate; else refuse above this P(not lung)
    abstain_share: float = ABSTAIN_SHARE
    max_mismatch: float = MAX_MISMATCH

    @property
    def colour(self) -> ColourCheck | None:
        """The colour check when the rule uses it (its thresholds also define background)."""
        return self.abstain.colour if self.abstain.uses_colour else None

    @property
    def min_tissue(self) -> float:
        """Least tissue share for a field: the fitted colour check's lower bound, else ``MIN_TISSUE``."""
        if self.colour is not None:
            low = self.colour.bounds.get("tissue_fraction", (None, None))[0]
            if isinstance(low, (int, float)) and 0.0 < low < 1.0:
                return float(low)
        return MIN_TISSUE


# Field level ------------------------------------------------------------------------------


def colour_ok(rgb: np.ndarray, rule: AbstainRule | None) -> bool:
    """True when the rule has no colour check or the image passes it."""
    if rule is None or not rule.uses_colour:
        return True
    return not colour_outside(colour_features(rgb, rule.colour), rule.colour)


def confidence_ok(probabilities: np.ndarray, rule: AbstainRule | None) -> bool:
    """True when the rule has no confidence floor or the top probability reaches it."""
    if rule is None or not rule.uses_softmax:
        return True
    return float(np.max(probabilities)) >= rule.min_confidence


def judge_field(rgb: np.ndarray, probabilities: np.ndarray, feature_score: float | None, rule: RefusalRule,
                gate_score: float | None = None, *, colour_failed: bool | None = None) -> Reason | None:
    """Why one field (the uint8 pixels exactly as given to the model) gets no answer, or ``None``.
    ``colour_failed``: the colour check on those pixels, when taken already (the field loop takes it
    ahead of the forward pass, which it does not need)."""
    if (not colour_ok(rgb, rule.abstain)) if colour_failed is None else colour_failed:
        return Reason.COLOUR
    if feature_score is not None and rule.feature_threshold is not None and feature_score > rule.feature_threshold:
        return Reason.FEATURE
    if gate_score is not None and rule.gate_threshold is not None and gate_score > rule.gate_threshold:
        return Reason.ORGAN
    if not confidence_ok(probabilities, rule.abstain):
        return Reason.CONFIDENCE
    return None


def judge_fields(fields: np.ndarray | Sequence[np.ndarray], probabilities: np.ndarray,
                 feature_scores: np.ndarray | None, rule: RefusalRule, gate_scores: np.ndarray | None = None, *,
                 colour_failed: Sequence[bool] | None = None) -> list[Reason | None]:
    """:func:`judge_field` for every field of a batch (N x H x W x 3 uint8, N x C, N or None, N or None;
    ``colour_failed``: N, or None to take the colour check here).

    A rule with a gate threshold but no gate scores is an engine that lost them: an error, not a
    model served without its gate."""
    if rule.gate_threshold is not None and gate_scores is None:
        raise ValueError("The refusal rule has a tissue gate, but the engine gave no gate scores.")
    def per_field(values: np.ndarray | None) -> Sequence[float | None]:
        return [None] * len(fields) if values is None else [float(v) for v in values]
    colour = [None] * len(fields) if colour_failed is None else colour_failed
    return [judge_field(rgb, row, score, rule, gate, colour_failed=failed)
            for rgb, row, score, gate, failed in zip(fields, probabilities, per_field(feature_scores),
                                                     per_field(gate_scores), colour, strict=True)]


# Image level ------------------------------------------------------------------------------


def judge_scale(decision: ScaleDecision, spec: ScaleSpec | None) -> Refusal | None:
    """Refuse an image whose scale could not be measured or lies outside what the model learned."""
    if not decision.measured:
        return Refusal(Reason.SCALE_UNKNOWN)
    if spec is None or decision.mode == "native":
        return None
    low, high = spec.relative_size_range
    if decision.relative_size < low:
        return Refusal(Reason.MAGNIFICATION_TOO_LOW, {"ratio": 1 / decision.relative_size})
    if decision.relative_size > high:
        return Refusal(Reason.MAGNIFICATION_TOO_HIGH, {"ratio": decision.relative_size})
    return None


def judge_stain(estimate: StainEstimate | None, spec: StainSpec | None) -> Refusal | None:
    """Refuse an image or slide whose stains could not be estimated, when its model says so
    (``on_failure = "refuse"``); by default (``"keep"``) its fields keep their colours instead."""
    if estimate is None or spec is None or estimate.ok or spec.on_failure != "refuse":
        return None
    return Refusal(Reason.STAIN)


def judge_field_size(shown_as: float, rule: RefusalRule) -> Refusal | None:
    """An image answered as one field whose cells would be shown ``shown_as`` times their training size."""
    if shown_as > rule.max_mismatch:
        return Refusal(Reason.AREA_TOO_SMALL, {"shown": shown_as})
    if shown_as < 1 / rule.max_mismatch:
        return Refusal(Reason.AREA_TOO_LARGE, {"shown": shown_as})
    return None


def judge_image(reasons: Sequence[Reason | None], mean_probabilities: np.ndarray | None, *, one_field: bool,
                rule: RefusalRule) -> Refusal | None:
    """The image's refusal from its classified fields' reasons (``None``: answered) and their mean.

    ``mean_probabilities``: the mean over the answered fields (``None`` when none was answered).
    """
    if not reasons:
        return Refusal(Reason.NO_TISSUE)
    refused = [reason for reason in reasons if reason is not None]
    if one_field and refused:
        return Refusal(refused[0])
    if len(refused) == len(reasons) or len(refused) / len(reasons) >= rule.abstain_share:
        # The most frequent field reason; on a tie, the one met first (fields in reading order).
        most = Counter(refused).most_common(1)[0][0]
        return Refusal(Reason.FIELDS_REFUSED, {"refused": len(refused), "fields": len(reasons),
                                               "most_often": f" (most often: {most.sentence().rstrip('.')})"})
    if mean_probabilities is not None and not confidence_ok(mean_probabilities, rule.abstain):
        return Refusal(Reason.FIELDS_DISAGREE, {"answered": len(reasons) - len(refused)})
    return None


def colour_refusal(rgb: np.ndarray, rule: RefusalRule) -> Refusal | None:
    """The whole image (resized to the model input) fails the colour check: that says more than
    any scale problem, so an image refused before its fields are cut is checked for it first."""
    return None if colour_ok(rgb, rule.abstain) else Refusal(Reason.COLOUR)
