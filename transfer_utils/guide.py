"""Chapter 8's decision guide: which transfer method to try first, as a rule of thumb.

Present layer. :func:`recommend_method` encodes the guide that
:func:`transfer_utils.plot_decision_guide` draws; :data:`GUIDE_SCENARIOS` are the
made-up projects of the chapter's exercise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _validate as V

__all__ = ["GUIDE_METHODS", "GUIDE_SCENARIOS", "Scenario", "recommend_method",
           "normalise_method"]



#: The answers :func:`recommend_method` can give (chapter 8's decision guide).
GUIDE_METHODS = ("feature extraction", "fine-tune", "partial fine-tune", "scratch")


_SIMILARITY_WORDS = {"low": 0.2, "medium": 0.5, "high": 0.8}


def _similarity(value) -> float:
    if isinstance(value, str):
        if value not in _SIMILARITY_WORDS:
            raise ValueError(f"similarity must be a number in [0, 1] or one of "
                             f"{sorted(_SIMILARITY_WORDS)}, got {value!r}")
        return _SIMILARITY_WORDS[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"similarity must be a number in [0, 1] or 'low'/'medium'/'high', "
                         f"got {value!r}")
    return float(value)


def recommend_method(
    labels_per_class: float, similarity, *, compute: str = "normal", small_model: bool = False
) -> str:
    """Chapter 8's rule of thumb: which transfer method to try first.

    It encodes the decision guide drawn by :func:`plot_decision_guide`; the
    boundaries are rules of thumb (chapters 3, 4 and 7 measure the effects behind
    them), not measured thresholds. Run a small pilot on your own data before
    committing.

    * Related source (``similarity >= 0.5``): with fewer than 5 labels per class,
      train a head on frozen features (feature extraction, chapter 4); with more,
      fine-tune (chapter 3). Tight training compute: feature extraction (features
      can be cached once).
    * Distant source (``similarity < 0.5``): with fewer than 1,000 labels per class,
      transfer only the early, general layers and retrain the rest (partial
      fine-tuning; chapter 7 shows frozen features from a distant source hurting);
      with 1,000 or more, training from scratch is as good and simpler.
    * ``small_model=True`` (the deployed model must be small or fast): the answer
      gets ``", then distil"`` (chapter 5).

    Parameters
    ----------
    labels_per_class : float
        Labelled target examples per class (>= 1).
    similarity : float in [0, 1] or {"low", "medium", "high"}
        How close the source data and task are to the target (0: unrelated).
    compute : {"normal", "low"}
        Training compute available.
    small_model : bool

    Returns
    -------
    str
        One of :data:`GUIDE_METHODS`, possibly followed by ``", then distil"``.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.recommend_method(2, "high")
    'feature extraction'
    >>> tu.recommend_method(50, 0.9, small_model=True)
    'fine-tune, then distil'
    """
    if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, (int, float)) \
            or not labels_per_class >= 1:
        raise ValueError(f"labels_per_class must be a number >= 1, got {labels_per_class!r}")
    V.one_of(compute, "compute", ("normal", "low"), "recommend_method")
    s = _similarity(similarity)
    n = float(labels_per_class)
    if s >= 0.5:
        method = "feature extraction" if n < 5 or compute == "low" else "fine-tune"
    else:
        method = "partial fine-tune" if n < 1000 else "scratch"
    return f"{method}, then distil" if small_model else method


@dataclass(frozen=True)
class Scenario:
    """A made-up project for chapter 8's decision-guide exercise.

    ``acceptable`` lists every method a careful practitioner could defend as the
    first try (the guide's own answer among them), and ``why`` says why the others
    are not: the guide is a rule of thumb, so the exercise grades judgement, not
    agreement with one boundary.
    """

    name: str
    description: str
    labels_per_class: float
    similarity: float
    compute: str = "normal"
    small_model: bool = False
    acceptable: tuple[str, ...] = ()
    why: str = ""

    def recommend(self) -> str:
        """What :func:`recommend_method` says for this scenario."""
        return recommend_method(self.labels_per_class, self.similarity, compute=self.compute,
                                small_model=self.small_model)


GUIDE_SCENARIOS = (
    Scenario("pets", "Classify 37 pet breeds from photos, 3 labelled photos per breed, "
             "starting from an ImageNet model.", 3, 0.9,
             acceptable=("feature extraction", "fine-tune"),
             why="with 3 photos per breed and a closely related source, start from the "
                 "pretrained features: a head on frozen features, or a careful fine-tune with "
                 "a small body rate (chapters 3 and 4); scratch or a partially retrained "
                 "network throws away what the source knows about pets"),
    Scenario("xray", "Grade chest X-rays (5 grades), 400 labelled images per grade, starting "
             "from an ImageNet model (natural photos: a distant domain).", 400, 0.3,
             acceptable=("partial fine-tune", "fine-tune"),
             why="natural-photo features are a distant start for X-rays, so frozen features "
                 "are a poor bet (chapter 7); fine-tuning all or part of the network is "
                 "standard practice in medical imaging, with gains smaller than often assumed "
                 "(Raghu et al. 2019)"),
    Scenario("factory", "Sort product photos into 8 defect types, 200 labels per type, an "
             "ImageNet model, a GPU for a day.", 200, 0.7,
             acceptable=("fine-tune", "partial fine-tune"),
             why="a related source, a few hundred labels per class and compute to spare: "
                 "adapt the network (chapter 3); frozen features leave accuracy on the table"),
    Scenario("phone", "The same defect classifier must then run on a phone at 30 frames per "
             "second.", 200, 0.7, small_model=True,
             acceptable=("fine-tune, then distil", "partial fine-tune, then distil"),
             why="the deployed model must be small and fast: train the best model you can, "
                 "then distil it into a small student (chapter 5)"),
    Scenario("radar", "Classify 4 radar signal types, 20,000 labelled signals per type, the only "
             "pretrained model was trained on speech.", 20000, 0.1,
             acceptable=("scratch", "partial fine-tune", "fine-tune"),
             why="20,000 labels per class are enough to train from scratch, and a distant "
                 "start rarely helps at that size (He et al. 2019); fine-tuning it is "
                 "harmless but a frozen speech body is not (chapter 7)"),
    Scenario("laptop", "Classify 10 kinds of handwritten symbols, 50 labels each, a model "
             "pretrained on handwritten digits, and only a laptop CPU for an hour.", 50, 0.8,
             compute="low", acceptable=("feature extraction", "partial fine-tune"),
             why="a related source but little training compute: cache the features once and "
                 "train a head (chapter 4), or retrain only the top layers"),
)


def normalise_method(answer: str) -> str:
    """An answer such as ``"Fine tune"`` in the guide's spelling (``"fine-tune"``)."""
    return re.sub(r"\s+", " ", str(answer).strip().lower().replace("finetune", "fine-tune")
                  .replace("fine tune", "fine-tune"))
