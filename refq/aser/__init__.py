"""ASER (Zhao et al., AAAI 2025, arXiv:2411.07762): activation smoothing and whitening-SVD error reconstruction
for W4A8 / W4A6 post-training quantization of LLM linear layers, next to its baselines.

Every quantized linear layer becomes

    y = Q_A(x / m) @ Q_W(W_n).T + (x / m) @ L_B.T @ L_A.T + b          (ASER: smoothing + error reconstruction)

with m the smoothing vector, W_n the smoothed weight without its outlier columns, and L_A L_B a rank-r
float correction of the total error E = W m - Q_W(W_n) found by the SVD of the whitened error E S,
S S^T = X_s X_s^T (ASER, Error Reconstruction; docs/aser.md, A3).

Modules (one concept each; import the ones you need, this package imports nothing heavy):
  types         LayerStats (Gram X^T X in float64, absmax, mean|x| of a layer input) and the linear names
  calibrate     one FP pass over calibration tokens: Gram X^T X (float64), absmax, mean|x| per layer input
  whiten_svd    Cholesky with eigenvalue-shift fallback, whitened truncated SVD (+ naive twin), rank rules
  smoothing     smoothing factors m, outlier channels O, the split W_s = W_n + W_o
  rtn, smoothquant, lorc, l2qer, gptq, aser   one method each: (W, stats, settings) -> QuantizedLinear
  settings      QuantSettings: bits, rank rule, outliers, smoothing, base quantizer, ablation flags
  methods       the method registry
  qlinear       the QuantizedLinear record, its fake-quant forward and its integer (Numba) forward
  apply         quantize every linear of a model (stories260K LLaMA; MiniLM BERT)
  evaluate      perplexity, embedding cosine / retrieval agreement, layer output error, overhead
  experiment    end-to-end runs (load, calibrate, quantize, evaluate) shared by the CLI and the table
  sentences     fixed English sentences for MiniLM calibration and evaluation
  table         the tables of docs/aser.md (`refq lm table`)

References: Zhao et al., "ASER: Activation Smoothing and Error Reconstruction for Large Language Model
Quantization", AAAI 2025, arXiv:2411.07762; docs/aser.md ("Where refq departs from the paper", notes A1-A8)
for every choice the paper leaves open.
"""
