"""The ``tumorseg`` console command."""
