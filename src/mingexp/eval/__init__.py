"""Evaluation: GenEval (and GenEval-Shapes), reconstruction PSNR/SSIM, edit success, VQA accuracy."""
