"""Vocabulary shared by the inbound and outbound sides (which never import each other)."""
