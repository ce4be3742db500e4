"""Fast paths that compute exactly what the reference :func:`jaxrnn.unroll` scan computes.

* :mod:`jaxrnn.kernels.fused` -- whole-sequence kernels for the LSTM (with or without peepholes), the
  GRU (both forms) and the Elman family (``elman``, ``irnn``, ``np_rnn``): a ``jax.custom_jvp`` whose
  tangent is a lean linear scan, so that BPTT (its transpose) keeps only the recurrent chain in the
  loop and computes the weight gradient as one matrix product after it, while forward mode still works.
* :mod:`jaxrnn.kernels.pallas` -- the same recurrences as persistent Pallas kernels (the time loop
  inside one kernel launch, forward and backward), ``unroll(..., backend="pallas")``; imported only
  when asked for.
* :mod:`jaxrnn.kernels.cudnn` -- ``jr.lstm`` through cuDNN (``jax.experimental.rnn``) on an NVIDIA GPU,
  ``unroll(..., backend="cudnn")``, with the weight packing :func:`~jaxrnn.kernels.cudnn.cudnn_weights`.

The cell factories attach these kernels to the cells they build (``Cell.kernel``); ``unroll`` uses
them unless ``fused=False``, and falls back to its reference scan wherever a kernel declines. This
package imports only JAX.
"""

from jaxrnn.kernels import fused
from jaxrnn.kernels.fused import *  # noqa: F403  (the fused kernels are this package's API)

__all__ = list(fused.__all__)
