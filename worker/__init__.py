"""Celery workers: the app, thin tasks and the segmentation service logic."""
