"""The shared mask helpers against plain-Python loops."""

import numpy as np

from jaxrnn.masking import reset_steps, select, valid_steps


def test_valid_steps_is_t_below_each_length():
    lengths = np.array([[0, 3], [5, 1]])
    out = np.asarray(valid_steps(lengths, 5))
    assert out.shape == (5, 2, 2) and out.dtype == bool
    for t in range(5):
        for i in range(2):
            for j in range(2):
                assert out[t, i, j] == (t < lengths[i, j])


def test_reset_steps_in_processing_order():
    rng = np.random.default_rng(0)
    resets = rng.random((6, 3)) < 0.4
    lengths = np.array([6, 4, 0])
    np.testing.assert_array_equal(np.asarray(reset_steps(resets, False, lengths)), resets)
    back = np.asarray(reset_steps(resets, True, lengths))
    for t in range(6):
        for b in range(3):
            want = t + 1 < 6 and resets[t + 1, b] and t + 1 < lengths[b]
            assert back[t, b] == want
    np.testing.assert_array_equal(np.asarray(reset_steps(resets, True)), np.r_[resets[1:], [[False] * 3]])


def test_select_per_sequence_on_every_leaf():
    mask = np.array([True, False])
    a = {"h": np.ones((2, 3)), "c": np.ones((2,))}
    b = {"h": np.zeros((2, 3)), "c": np.zeros((2,))}
    out = select(mask, a, b)
    np.testing.assert_array_equal(out["h"], [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(out["c"], [1, 0])
