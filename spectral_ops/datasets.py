r"""Real matrices shipped with the package (NumPy only).

:func:`real_matrices` loads ``spectral_ops/data/real_matrices.npz``: float32
gradients, an Adam first moment and a Muon-style momentum of a pretrained
transformer (``sentence-transformers/all-MiniLM-L6-v2``, hidden size 384) on
real text (CPython's ``pydoc_data.topics``), recorded by
``tools/make_real_matrices.py``. They are nearly low-rank, with condition
numbers of 1e8 to 1e11: the inputs optimizers actually hand to
:func:`~spectral_ops.polar`, :func:`~spectral_ops.clip` and
:func:`~spectral_ops.power`. :func:`real_matrices_info` returns the metadata
(source, text, training, and shape, ``s_max``, rank and condition of every
recorded matrix).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

__all__ = ["REAL_KINDS", "real_matrices", "real_matrices_info"]

#: Kinds of matrix in the set (the last part of a name, ``layer5.mlp_out.grad``).
REAL_KINDS = ("weight", "grad", "exp_avg", "momentum")

_FILE = "real_matrices.npz"
_META = "__metadata__"


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, np.ndarray], dict]:
    ref = resources.files("spectral_ops").joinpath("data", _FILE)
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    for a in arrays.values():
        a.setflags(write=False)
    return arrays, meta


def real_matrices(kinds=None) -> dict[str, np.ndarray]:
    """The real matrices of the shipped set, by name.

    Parameters
    ----------
    kinds : str or iterable of str, optional
        Keep only these kinds (see :data:`REAL_KINDS`): e.g. ``"grad"`` or
        ``("exp_avg", "momentum")``. Default: every matrix in the set.

    Returns
    -------
    dict of str to numpy.ndarray
        Names ``layer{i}.{matrix}.{kind}`` (``matrix`` one of ``attn_q``,
        ``attn_k``, ``attn_v``, ``attn_out``, ``mlp_in``, ``mlp_out``; torch's
        ``(out_features, in_features)`` layout) in sorted order, each a fresh,
        writable float32 array of shape ``(m, n)``.

    Raises
    ------
    ValueError
        If ``kinds`` names a kind not in :data:`REAL_KINDS`.

    See Also
    --------
    real_matrices_info : Where the matrices come from, and their statistics.

    Examples
    --------
    >>> from spectral_ops.datasets import real_matrices
    >>> grads = real_matrices("grad")
    >>> all(name.endswith(".grad") for name in grads)
    True
    >>> all(g.dtype.name == "float32" and g.ndim == 2 for g in grads.values())
    True
    """
    if kinds is None:
        wanted = set(REAL_KINDS)
    else:
        wanted = {kinds} if isinstance(kinds, str) else set(kinds)
        unknown = sorted(wanted - set(REAL_KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; the set has kinds {list(REAL_KINDS)}.")
    arrays, _ = _load()
    return {name: np.array(a) for name, a in sorted(arrays.items())
            if name.rsplit(".", 1)[-1] in wanted}


def real_matrices_info() -> dict:
    """Metadata of the shipped set.

    Returns
    -------
    dict
        Parsed JSON with the source model, package and version, text, loss and
        training settings, the names ``"stored"`` in the file and, under
        ``"matrices"``, for every recorded matrix (stored or not) its
        ``shape``, ``s_max``, ``fro``, ``rank_1e-6`` and ``rank_1e-3`` (singular
        values above that fraction of ``s_max``), ``condition`` (``s_max`` over
        the smallest singular value above ``1e-12 s_max``) and ``s_min``, all
        from a float64 SVD. A fresh copy on every call.

    Examples
    --------
    >>> from spectral_ops.datasets import real_matrices_info
    >>> info = real_matrices_info()
    >>> info["model"]
    'sentence-transformers/all-MiniLM-L6-v2'
    >>> sorted(info["stored"]) == sorted(real_matrices())
    True
    """
    _, meta = _load()
    return json.loads(json.dumps(meta))
