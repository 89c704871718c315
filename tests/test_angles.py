"""The one identity distance: angles between embeddings, pairwise, row by row and from cosines."""

import numpy as np
import torch

from synthdb.angles import angle, from_cosine, rowwise_angle
from synthdb.faces.embed import Embedder


def test_angle_is_the_papers_distance() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [-1.0, 0.0]])
    expected = np.array([[0.0, np.pi], [np.pi / 2, np.pi / 2]])
    np.testing.assert_allclose(angle(a, b).numpy(), expected, atol=1e-3)
    assert Embedder.distance is angle
    x = torch.tensor([[1.0, 0.0]], requires_grad=True)
    angle(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()  # identical vectors keep a finite gradient


def test_rowwise_angle_is_the_diagonal_of_angle() -> None:
    a, b = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), torch.randn(6, 5)
    torch.testing.assert_close(rowwise_angle(a, b), torch.diagonal(angle(a, b)), rtol=0, atol=2e-6)
    x = torch.tensor([[0.0, 3.0]], requires_grad=True)
    rowwise_angle(x, -x.detach()).sum().backward()  # opposite vectors: arccos(-1) keeps a finite slope too
    assert torch.isfinite(x.grad).all()


def test_from_cosine_clips_float_error_instead_of_returning_nan() -> None:
    cosines = np.array([1.0 + 1e-7, 1.0, 0.0, -1.0, -1.0 - 1e-7])
    np.testing.assert_array_equal(from_cosine(cosines), [0.0, 0.0, np.pi / 2, np.pi, np.pi])
    assert abs(float(from_cosine(np.cos(1.4))) - 1.4) < 1e-12
