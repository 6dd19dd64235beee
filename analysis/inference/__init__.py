"""Quantities derived from a fit's posterior for decisions: minimal relevant effects, new studies, replication."""
