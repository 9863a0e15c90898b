"""``ZeroShotClassifier``: a CLIP or SigLIP model as a scikit-learn classifier on raw images, no training.

::

    images --hf:MODEL#image--> L2-normalised (n, d) --.
                                                       >-- logit_scale * cos + logit_bias --> softmax (CLIP)
    classes -> template.format(name) --hf:MODEL#text--> (k, d)                                or sigmoid (SigLIP)

The two towers are featx backbones (exported on first use, see :mod:`featx.torchmodels.hfexport`), whose
records carry the model's ``logit_scale`` (``exp`` of the parameter, as the model applies it) and
``logit_bias`` (SigLIP). ``predict_proba`` is the model's own zero-shot probability: a softmax
over the classes for CLIP; for SigLIP an independent sigmoid per class, as the model defines it,
so its rows do not sum to 1.

Examples
--------
>>> from featx.estimators.zeroshot import ZeroShotClassifier
>>> clf = ZeroShotClassifier("hf:openai/clip-vit-base-patch32", classes=["cat", "dog"])  # doctest: +SKIP
>>> clf.fit().predict(["pet.jpg"])                                                        # doctest: +SKIP
array(['cat'], dtype='<U3')
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..factory import load_backbone

from ..errors import InputError
from .transformer import EmbeddingTransformer
from ..validation import check_int, invalid

__all__ = ["ZeroShotClassifier"]


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Classify raw images by their similarity to class prompts, with a CLIP or SigLIP model.

    Parameters
    ----------
    model : str
        ``"hf:MODEL"``: a CLIP or SigLIP model by hub id or local folder; its towers
        ``hf:MODEL#image`` and ``hf:MODEL#text`` are exported on first use.
    classes : list of str, dict or None, default=None
        The class names put into ``template``. A list: the labels are the names themselves; a
        dict ``{label: name}``: labels of any type, each described by its name; None: the
        labels of ``y`` at ``fit``, their ``str`` as names.
    template : str, default="a photo of a {}."
        The prompt of a class: ``template.format(name)``. A parameter, so ``GridSearchCV`` can
        choose among templates.
    batch_size : int, optional
        Items per ONNX Runtime call (default: the device's, :mod:`featx.engine.defaults`).
    providers, threads :
        ONNX Runtime providers and intra-op threads (see :class:`featx.EmbeddingTransformer`).

    Attributes
    ----------
    classes_ : ndarray
        The labels, in the order of the columns of ``predict_proba``.
    prompts_ : list of str
        The prompt of each class.
    class_embeddings_ : ndarray of shape (n_classes, d)
        The prompts' text embeddings (L2-normalised).
    logit_scale_, logit_bias_ : float
        The model's logit scale (as it multiplies the cosine) and bias (0 for CLIP).
    probabilities_ : {"softmax", "sigmoid"}
        How the model turns logits into probabilities.
    encoder_ : EmbeddingTransformer
        The fitted image tower.

    Notes
    -----
    ``fit`` trains nothing: it records the classes and embeds their prompts. ``X`` is any input
    :class:`featx.EmbeddingTransformer` takes for an image backbone (paths, encoded bytes, PIL
    images, uint8 arrays, a uint8 batch).
    """

    def __init__(self, model="hf:openai/clip-vit-base-patch32", classes=None, template="a photo of a {}.",
                 batch_size=None, providers=None, threads=None):
        self.model, self.classes, self.template = model, classes, template
        self.batch_size, self.providers, self.threads = batch_size, providers, threads

    def _validate_params(self) -> None:
        owner = type(self).__name__
        if not (isinstance(self.model, str) and self.model.startswith("hf:") and "#" not in self.model
                and self.model[3:].strip()):
            raise invalid("model", owner, "'hf:MODEL' naming a CLIP or SigLIP model (hub id or folder, no '#tower')",
                          self.model)
        classes = self.classes
        if not (classes is None or isinstance(classes, Mapping)
                or (isinstance(classes, (list, tuple, np.ndarray)) and len(classes) > 0)):
            raise invalid("classes", owner, "None, a non-empty list of class names or a dict {label: name}", classes)
        if not (isinstance(self.template, str) and self.template.count("{}") == 1):
            raise invalid("template", owner, "a str with one '{}' for the class name", self.template)
        check_int(self.batch_size, "batch_size", owner, low=1, optional=True)
        check_int(self.threads, "threads", owner, low=1, optional=True)

    def _labels_and_names(self, y) -> tuple[np.ndarray, list[str]]:
        if isinstance(self.classes, Mapping):
            labels, names = list(self.classes), [str(v) for v in self.classes.values()]
        elif self.classes is not None:
            labels = list(self.classes)
            names = [str(c) for c in labels]
        elif y is None:
            raise invalid("classes", type(self).__name__, "given when fit() gets no y", None)
        else:
            values = list(np.asarray(y, dtype=object).ravel())
            if any(v is None or (isinstance(v, float) and v != v) for v in values):
                raise InputError(f"{type(self).__name__}: y holds None/NaN labels; a missing label is never a class: "
                                 "leave those items out, or give classes= explicitly")
            labels = list(np.unique(np.asarray(y)))
            names = [str(c) for c in labels]
        owner = type(self).__name__
        if any(c is None or (isinstance(c, float) and c != c) for c in labels):  # decided in #24
            raise invalid("classes", owner, "labels that are not None/NaN (a missing label is never a class)",
                          self.classes)
        if len(set(map(str, labels))) != len(labels):
            raise invalid("classes", owner, "a list of distinct classes", self.classes)
        prompts = [self.template.format(name) for name in names]
        repeated = sorted({p for p in prompts if prompts.count(p) > 1})
        if repeated:  # two classes with one prompt score the same: the second could never be predicted
            raise invalid("classes", owner, f"classes whose prompts differ (several give {repeated[0]!r}); "
                          "name each class differently", self.classes)
        return np.asarray(labels), names

    def fit(self, X=None, y=None):
        """Record the classes, load the two towers, and embed the class prompts.

        Parameters
        ----------
        X : ignored
            Accepted for the estimator API; nothing is learned from it.
        y : array-like, optional
            Labels: with ``classes=None`` they give the classes; else each must be one of them.

        Returns
        -------
        self
        """
        self._validate_params()
        labels, names = self._labels_and_names(y)
        if y is not None and self.classes is not None:
            unknown = sorted({str(v) for v in np.asarray(y).tolist()} - {str(v) for v in labels.tolist()})
            if unknown:
                raise InputError(f"{type(self).__name__}: y has labels {unknown[:5]} that are not among the classes "
                                 f"{[str(v) for v in labels.tolist()][:10]}")
        self.encoder_ = EmbeddingTransformer(f"{self.model}#image", batch_size=self.batch_size,
                                             providers=self.providers, threads=self.threads).fit()
        text = load_backbone(f"{self.model}#text", providers=self.providers, threads=self.threads)
        source = text.spec.source
        self.classes_ = labels
        self.prompts_ = [self.template.format(name) for name in names]
        self.class_embeddings_ = text.embed(self.prompts_, batch_size=self.batch_size)
        self.logit_scale_ = float(source["logit_scale"])
        self.logit_bias_ = float(source.get("logit_bias") or 0.0)
        self.probabilities_ = source.get("probabilities", "softmax")
        return self

    def decision_function(self, X) -> np.ndarray:
        """The model's logits, ``logit_scale * cos(image, prompt) + logit_bias``: (n, n_classes)."""
        check_is_fitted(self, "class_embeddings_")
        images = self.encoder_.transform(X)
        return (images @ self.class_embeddings_.T) * np.float32(self.logit_scale_) + np.float32(self.logit_bias_)

    def predict_proba(self, X) -> np.ndarray:
        """The model's zero-shot probabilities: softmax over the classes (CLIP), sigmoid per class (SigLIP)."""
        logits = self.decision_function(X).astype(np.float64)
        if self.probabilities_ == "sigmoid":
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """The class of the highest logit for each image."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # raw images, not a numeric matrix
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True  # paths of images
        tags.target_tags.required = False  # fit needs no y when classes are given
        tags.requires_fit = True
        return tags
