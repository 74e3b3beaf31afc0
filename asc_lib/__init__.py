"""asc_lib: the library behind the replication book of Cai, Li & Shao (DCASE 2024).

Chapters teach; this package computes. One module per idea:
profiles (settings), repro (seeding), data (datasets), features, models, train, runs (a run's folder,
manifest and lock), teachers, views and distill (the student), metrics, results, plots,
book (execute the chapters and build the book).
"""

from .kernels import pin_kernels

pin_kernels()  # before anything imports torch: the same CPU kernels, hence the same numbers, on every x86-64

__version__ = "0.1.0"
