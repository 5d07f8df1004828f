"""The three services of the suite; ``python -m services`` runs them all (make run)."""
