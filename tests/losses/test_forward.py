"""Forward loss correction: values against a direct computation, its defining property, and the matrix
it takes from the data or a file."""

import json
import math

import numpy as np
import pytest
import torch

from noisyseg.errors import NoisysegError
from noisyseg.losses import build_loss, cross_entropy, forward_corrected_cross_entropy
from noisyseg.losses.transition import transition_matrix


def _direct(logits, labels, matrix):
    """-log q[y] with q = (p_0, p_{1..K} T), one RoI at a time in float64 with Python sums."""
    out = []
    for z, y in zip(logits.double().tolist(), labels.tolist()):
        e = [math.exp(v - max(z)) for v in z]
        p = [v / sum(e) for v in e]
        k = len(p) - 1
        q = [p[0]] + [sum(p[1 + c] * float(matrix[c][j]) for c in range(k)) for j in range(k)]
        out.append(-math.log(q[y]))
    return out


def _symmetric(k, rate):
    return torch.full((k, k), rate / (k - 1), dtype=torch.float64).fill_diagonal_(1 - rate)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_equal_a_direct_computation(seed):
    g = torch.Generator().manual_seed(seed)
    k = 5
    logits = torch.randn(30, k + 1, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, k + 1, (30,), generator=g)
    raw = torch.rand(k, k, generator=g, dtype=torch.float64) + torch.eye(k, dtype=torch.float64) * 2
    matrix = raw / raw.sum(dim=1, keepdim=True)
    got = forward_corrected_cross_entropy(logits, labels, matrix, reduction="none")
    assert got.tolist() == pytest.approx(_direct(logits, labels, matrix.tolist()), rel=1e-12, abs=1e-12)


def test_with_the_identity_matrix_it_is_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    got = forward_corrected_cross_entropy(logits, labels, torch.eye(3), reduction="none")
    assert torch.allclose(got, cross_entropy(logits, labels, reduction="none"), atol=1e-6)


def test_the_clean_posterior_minimises_the_expected_loss_under_the_noise():
    """For an object of true class c, labels arrive as c -> j with probability T[c, j]. The expected
    corrected loss over those labels is smallest when the model puts all its mass on c (and plain CE on
    the same labels would prefer the noisy mixture instead)."""
    k, c = 4, 2
    matrix = _symmetric(k, 0.6)  # more wrong labels than right ones for this class
    labels = torch.arange(1, k + 1)
    weights = matrix[c]

    def expected(probs, loss):
        logits = torch.log(torch.tensor([[1e-9] + probs], dtype=torch.float64)).repeat(k, 1)
        return float((loss(logits, labels) * weights).sum())

    def corrected(z, y):
        return forward_corrected_cross_entropy(z, y, matrix, reduction="none")

    def plain(z, y):
        return cross_entropy(z, y, reduction="none")

    onehot = [1.0 if j == c else 1e-9 for j in range(k)]
    mixture = weights.tolist()
    assert expected(onehot, corrected) < expected(mixture, corrected)
    assert expected(mixture, plain) < expected(onehot, plain)


def test_the_registered_loss_needs_its_matrix_and_checks_its_shape():
    loss_fn = build_loss("forward")
    assert loss_fn.params == {"transition": "data", "balance": 0.0} and loss_fn.needs_transition_matrix
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    with pytest.raises(NoisysegError, match="^loss forward: no transition matrix was set"):
        loss_fn(z, y)
    with pytest.raises(NoisysegError, match=r"transition_matrix must be a \(3, 3\) tensor for 3 classes, got \(2, 2\)"):
        forward_corrected_cross_entropy(z, y, torch.eye(2))
    with pytest.raises(NoisysegError, match="transition must be 'data', 'identity' or the path of a matrix file"):
        build_loss("forward", transition=3)


def _coco(tmp_path, with_clean=True):
    cats = [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}, {"id": 7, "name": "c"}]
    # true a: 4 (1 given as b); true b: 2 (both right); true c: none
    pairs = [(1, 1), (1, 1), (1, 1), (1, 3), (3, 3), (3, 3)]
    anns = [{"id": i + 1, "image_id": 1, "category_id": given, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
             **({"clean_category_id": true} if with_clean else {})} for i, (true, given) in enumerate(pairs)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
                                "annotations": anns, "categories": cats}))
    return path


def test_the_matrix_from_the_data_is_counted_from_clean_category_id(tmp_path):
    path = _coco(tmp_path)
    got = transition_matrix("data", path, ("a", "b", "c"))  # label-map order: ids 1, 3, 7
    assert got.tolist() == [[0.75, 0.25, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # c: no annotations, identity
    assert transition_matrix("identity", path, ("a", "b", "c")).tolist() == np.eye(3).tolist()
    (tmp_path / "real").mkdir()
    with pytest.raises(NoisysegError, match="transition=data needs the file's clean_category_id"):
        transition_matrix("data", _coco(tmp_path / "real", with_clean=False), ("a", "b", "c"))


def test_a_matrix_file_is_reordered_to_the_data_s_classes_and_checked(tmp_path):
    spec = {"classes": ["c", "a", "b"], "matrix": [[1, 0, 0], [0, 0.5, 0.5], [0.2, 0, 0.8]]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(spec))
    got = transition_matrix(str(path), tmp_path / "train.json", ("a", "b", "c"))
    assert np.allclose(got, [[0.5, 0.5, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 1.0]])
    path.write_text(json.dumps({**spec, "classes": ["c", "a", "d"]}))
    with pytest.raises(NoisysegError, match=r"classes differ from the training data's \(missing: b; not in the data: d\)"):
        transition_matrix(str(path), tmp_path / "train.json", ("a", "b", "c"))
    path.write_text(json.dumps({**spec, "matrix": [[1, 0, 0], [0, 0.5, 0.6], [0.2, 0, 0.8]]}))
    with pytest.raises(NoisysegError, match=r"t.json: matrix: row 1 \(a\) sums to 1.1, not 1"):
        transition_matrix(str(path), tmp_path / "train.json", ("a", "b", "c"))


def test_training_with_the_forward_loss_end_to_end(tiny_coco, tmp_path, capsys):
    """The trainer gives the loss the training file's matrix; a file without clean_category_id is refused
    in one line before anything is made."""
    import yaml

    from helpers import assert_one_line, cli, tiny_config

    noisy = tmp_path / "noisy.json"
    assert cli(capsys, "noise", tiny_coco["train_json"], "-o", noisy, "--kind", "symmetric", "--rate", "0.4")[0] == 0
    tree = tiny_config(tiny_coco, epochs=1)
    tree["loss"] = {"name": "forward", "params": {"balance": 1.0}}  # the prior is counted from the file too
    config = tmp_path / "forward.yaml"
    config.write_text(yaml.safe_dump(tree))
    rc, _, err = cli(capsys, "train", config, "-o", tmp_path / "clean_run", "--no-progress")
    assert rc == 2 and not (tmp_path / "clean_run").exists()
    assert_one_line(err, "train", "loss.params.transition=data needs the file's clean_category_id")
    rc, _, _ = cli(capsys, "train", config, "-o", tmp_path / "run", "--set", f"data.train_json={noisy}", "--no-progress")
    assert rc == 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["epoch"] == 1 and "segm" in record


# balance: the rows of T divided by the true classes' training frequencies (prior-aware correction)


def _posterior_target(p, label, matrix, prior, balance):
    """r[c] ~ p[c] T[c, y] / prior[c]^b over the object classes, in float64 from Python lists."""
    k = len(prior)
    w = [p[1 + c] * float(matrix[c][label - 1]) / prior[c] ** balance for c in range(k)]
    return [0.0] + [v / sum(w) for v in w]


@pytest.mark.parametrize("balance", [0.0, 0.5, 1.0])
def test_the_gradient_is_p_minus_the_prior_corrected_posterior_of_the_true_class(balance):
    """d loss / d logits = p - r with r[c] ~ p[c] T[c, y] / prior[c]^balance (r[background] = 0), for
    the matrix transition_matrix builds; the column scaling it applies changes no gradient."""
    from noisyseg.losses.transition import balanced_matrix

    g = torch.Generator().manual_seed(7)
    k = 4
    prior = np.array([0.6, 0.25, 0.1, 0.05])
    matrix = _symmetric(k, 0.4).numpy()
    used = torch.as_tensor(balanced_matrix(matrix, prior, balance) if balance else matrix)
    logits = (torch.randn(6, k + 1, generator=g, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.tensor([1, 2, 3, 4, 4, 3])
    forward_corrected_cross_entropy(logits, labels, used, reduction="sum").backward()
    p = torch.softmax(logits.detach(), dim=1).tolist()
    want = [[pi - ri for pi, ri in zip(row, _posterior_target(row, int(y), matrix, prior, balance))]
            for row, y in zip(p, labels.tolist())]
    assert logits.grad.tolist() == [pytest.approx(w, abs=1e-12) for w in want]


def test_a_rare_class_the_model_has_not_learned_keeps_its_right_label_only_when_balanced():
    """The starving the balance fixes: an image of the rare class, rightly labelled, that the model puts
    90% in the frequent class. Plain forward correction reads the label as noise (r[rare] 0.14: the
    rare logit's gradient is almost 0); balanced by the prior, r[rare] is 0.76 and the push is CE-like."""
    from noisyseg.losses.transition import balanced_matrix

    matrix = np.array([[0.6, 0.4], [0.4, 0.6]])
    prior = np.array([0.95, 0.05])
    logits = torch.log(torch.tensor([[1e-9, 0.9, 0.1]], dtype=torch.float64))
    pushes = {}
    for balance in (0.0, 1.0):
        z = logits.clone().requires_grad_()
        used = torch.as_tensor(balanced_matrix(matrix, prior, balance))
        forward_corrected_cross_entropy(z, torch.tensor([2]), used).backward()
        pushes[balance] = -z.grad[0, 2].item()
    assert pushes[0.0] == pytest.approx(0.06 / 0.42 - 0.1, rel=1e-6)  # r = 0.06 / (0.36 + 0.06)
    assert pushes[1.0] == pytest.approx(1.2 / (1.2 + 0.36 / 0.95) - 0.1, rel=1e-6)
    assert pushes[0.0] < 0.05 < 0.6 < pushes[1.0]


def test_balancing_changes_nothing_on_balanced_classes_or_on_clean_labels():
    from noisyseg.losses.transition import balanced_matrix

    matrix = _symmetric(5, 0.4).numpy()
    assert np.allclose(balanced_matrix(matrix, np.full(5, 0.2), 1.0), matrix)
    # identity: every column has one entry, scaled back to 1, whatever the prior
    assert np.allclose(balanced_matrix(np.eye(3), np.array([0.7, 0.2, 0.1]), 1.0), np.eye(3))
    got = balanced_matrix(matrix, np.array([0.5, 0.2, 0.15, 0.1, 0.05]), 1.0)
    assert np.allclose(got.max(axis=0), matrix.max(axis=0)) and (got <= 1).all()


def test_the_prior_is_counted_from_the_data_or_solved_from_a_matrix_file(tmp_path):
    from noisyseg.losses.transition import true_class_prior

    path = _coco(tmp_path)  # true a: 4, b: 2, c: 0 (given: a 3, b 3)
    names = ("a", "b", "c")
    t = transition_matrix("data", path, names)
    assert true_class_prior("data", path, names, t).tolist() == pytest.approx([4 / 6, 2 / 6, 0.0])
    assert true_class_prior("identity", path, names, np.eye(3)).tolist() == pytest.approx([0.5, 0.5, 0.0])
    # the given labels are exactly T^T of the true frequencies, so the solve recovers them
    assert true_class_prior("m.json", path, names, t).tolist() == pytest.approx([4 / 6, 2 / 6, 0.0], abs=1e-9)
    # rows / (2/3, 1/3, floor): column b's largest entry (3, true b) is scaled back to 1, a's 0.25 -> 0.125
    balanced = transition_matrix("data", path, names, balance=1.0)
    assert balanced.tolist() == [pytest.approx(r) for r in ([0.75, 0.125, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])]


def test_balance_outside_0_1_is_refused_in_one_line():
    with pytest.raises(NoisysegError, match=r"^forward loss: balance must be in \[0, 1\]"):
        forward_corrected_cross_entropy(torch.zeros(2, 3), torch.tensor([1, 2]), torch.eye(2), balance=1.5)
    with pytest.raises(NoisysegError, match=r"balance must be in \[0, 1\]"):
        build_loss("forward", balance=-0.1)
