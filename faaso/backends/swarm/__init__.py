"""The Docker Swarm orchestrator: one function is one Swarm service (see ``orchestrator.py``)."""
