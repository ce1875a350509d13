"""SARDFQ: data-free quantization of vision transformers (Zhong et al., arXiv:2412.16553, ICCV 2025).

Stage 1, synthesis of 32 calibration images through the frozen FP ViT:
  priors.py      APA attention priors (random Gaussian mixtures on the patch grid)
  losses.py      APA, soft labels / soft cross-entropy, TV, and PSAQ-ViT's patch-similarity entropy
  msr.py         Multi-Semantic Reinforcement regions (2 x 2 grid cells, own labels)
  synthesis.py   the generation loop (methods 'noise', 'psaq', 'sardfq'; APA/MSR/SL switches)
Stage 2, quantization on those images:
  quant_vit.py   the quantized ViT as a ModelOps (fake-quant and integer paths), range initialisation
  reconstruct.py block-wise reconstruction (Adam, lr 4e-5, 100 steps per block)
Driver:
  pipeline.py    one configuration end to end; table.py the docs/sardfq.md table (3 seeds, ablation)

`refq vit dfq --help` runs one configuration; walkthroughs/01_sardfq.py shows every step. Submodules are
not imported here, so `import refq.sardfq` stays cheap.
"""
