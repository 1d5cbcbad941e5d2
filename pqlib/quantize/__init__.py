"""Optimal quantization in torch: Lloyd's k-means and competitive learning (CLVQ).

A K-point *quantizer* of a probability measure μ on R^d is a codebook c_1..c_K with the
weights w_k = μ(C_k) of its Voronoi cells C_k. Its (quadratic) *distortion* is

.. math::

    D(c) = \\mathbb{E}_{X\\sim\\mu} \\min_k \\lVert X - c_k \\rVert^2
         = W_2^2\\Big(\\mu, \\sum_k w_k \\delta_{c_k}\\Big),

the second equality being why the Voronoi masses are the best weights for a fixed codebook
(DDOQ). :func:`kmeans` runs Lloyd's fixed-point iteration on a tensor held in memory;
:func:`clvq` runs competitive learning (Pagès' CLVQ; with the default step 1/count it is
MacQueen's / Sculley's mini-batch k-means) on a tensor or on a stream of batches, in memory
O(K·d + batch).

Both return a :class:`Quantizer`. Computation runs in the input's dtype and device (float32
on the CPU by default); cluster sums, counts and distortions are accumulated in float64.

The package: ``api`` (these functions and :class:`Quantizer`), ``lloyd`` (the Lloyd engine:
assignment, cell means, re-seeding), ``seeding`` (k-means++), ``online`` (CLVQ and its
array / stream sources).

References
----------
.. [Pages2015] G. Pagès, "Introduction to vector quantization and its applications for numerics",
   ESAIM: Proceedings and Surveys 48 (2015).
.. [Sculley2010] D. Sculley, "Web-scale k-means clustering", WWW 2010.
.. [Arthur2007] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding",
   SODA 2007.
"""

from .api import Quantizer, assign, clvq, kmeans, voronoi_weights

__all__ = ["Quantizer", "kmeans", "clvq", "assign", "voronoi_weights"]
