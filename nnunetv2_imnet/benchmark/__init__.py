"""Leaderboard-style benchmark of nnU-Net trainers: runs, metrics and statistics.

This package is the library behind ``nnunetv2-imnet benchmark``; the repository's top-level ``benchmarks/`` folder
is something else: scripts run by hand (overhead, memory soak, the Hippocampus comparison) and their results.
"""
