"""Bundled game and enterprise scenarios, each with its metrics."""
