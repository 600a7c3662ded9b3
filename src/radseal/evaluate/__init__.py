"""Image quality metrics, rate-distortion runs and evaluation reports."""
