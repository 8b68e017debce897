"""The label-noise transition matrix a forward-corrected loss trains through.

``T[c, j] = P(given class j | true class c)`` over the K object classes (rows sum to 1). Background is
never a noisy label (a wrong class label is still a right "this is an object"), so T covers classes only.

Where T comes from (``loss.params.transition``):

- ``"data"``: the training file's own realised noise, counted from ``clean_category_id`` (a file written
  by ``noisyseg noise``): the *known* matrix of injected noise. Only the class-level counts are used, never
  which annotation is wrong.
- ``"identity"``: no noise (the loss is then plain cross-entropy); what the bench uses on clean labels;
- a path to a JSON file ``{"classes": [K names], "matrix": K x K}`` (the format of ``noise --kind matrix``):
  a matrix estimated for real noise (for instance from an audit's confident joint), or written by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from noisyseg.errors import NoisysegError
from noisyseg.utils.io import read_json

FROM_DATA = "data"
IDENTITY = "identity"


def transition_matrix(transition: str, train_json: str | Path, class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """(K, K) float64 row-stochastic matrix in the order of ``class_names`` (the label map's, labels 1..K).

    A true class without annotations in the file keeps an identity row. Raises a one-line
    :class:`NoisysegError` naming the file for a file without ``clean_category_id`` (with ``"data"``), a
    matrix file that does not validate or whose classes are not exactly ``class_names``.
    """
    from noisyseg.noise.inject import check_matrix, realised_matrix

    names = [str(n) for n in class_names]
    if transition == IDENTITY:
        return np.eye(len(names))
    if transition == FROM_DATA:
        coco = read_json(train_json, "training file")
        try:
            found, counts = realised_matrix(coco)
        except NoisysegError as e:
            raise NoisysegError(f"{train_json}: loss.params.transition=data needs the file's clean_category_id "
                                f"({e}); give a matrix file instead") from None
        matrix = counts.astype(np.float64)
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.where(totals > 0, matrix / np.maximum(totals, 1), np.eye(len(found)))
    else:
        from noisyseg.noise.files import read_matrix_file

        found, matrix = check_matrix(read_matrix_file(transition))
    if sorted(found) != sorted(names):
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        raise NoisysegError(f"{train_json if transition == FROM_DATA else transition}: the matrix's classes differ "
                            f"from the training data's (missing: {', '.join(missing) or 'none'}; not in the data: "
                            f"{', '.join(extra) or 'none'})")
    order = [found.index(n) for n in names]
    return np.ascontiguousarray(matrix[np.ix_(order, order)])
