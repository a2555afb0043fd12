"""Hospital-archive processing: discover new studies, render volumes, submit, report.

``sources`` finds studies under the configured roots (confined to them) and hashes their
content; ``rendering`` turns PET volumes and DICOM series into MIP PNGs like the
training images; ``scan`` submits the new ones as one nightly job; ``report`` lists a
night's studies with their metrics. Imports point to ``db`` and ``config`` only.
"""
