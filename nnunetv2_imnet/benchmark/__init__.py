"""Leaderboard-style benchmark of nnU-Net trainers: runs, metrics and statistics."""
