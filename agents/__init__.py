"""Personas, agents, memory, plans and action types (built on swarm.runtime)."""
