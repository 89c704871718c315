"""Exports of catalog datasets into the formats face-recognition trainers and evaluators read."""
