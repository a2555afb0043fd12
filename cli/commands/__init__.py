"""Subcommands of ``tumorseg``; each keeps heavy imports inside ``run``."""
