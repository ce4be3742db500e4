"""Fast paths that compute exactly what the reference :func:`jaxrnn.unroll` scan computes.

* :mod:`jaxrnn.kernels.fused` -- whole-sequence kernels for the LSTM, the GRU (``reset_after=True``)
  and the Elman family (``elman``, ``irnn``, ``np_rnn``): a ``jax.custom_jvp`` whose tangent is a lean
  linear scan, so that BPTT (its transpose) keeps only the recurrent chain in the loop and computes the
  weight gradient as one matrix product after it, while forward mode still works.

The cell factories attach these kernels to the cells they build (``Cell.kernel``); ``unroll`` uses
them unless ``fused=False``, and falls back to its reference scan wherever a kernel declines. This
package imports only JAX.
"""

from jaxrnn.kernels.fused import FusedSpec, elman_kernel, fused_scan, gru_kernel, lstm_kernel

__all__ = ["FusedSpec", "elman_kernel", "fused_scan", "gru_kernel", "lstm_kernel"]
