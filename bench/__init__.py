"""lbaffd's benchmark (``make bench`` / ``python -m bench``): see README.md, Benchmark."""
