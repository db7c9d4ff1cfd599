"""Image metrics: PSNR and SSIM, LPIPS, and the distribution metrics FID, KID and IS, with their weight files."""
