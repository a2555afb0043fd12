"""Training: crops, augmentation, the loop, and post-processing tuning."""
