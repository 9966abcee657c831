"""Conformance suite for dmamap backends (see dmamap.testing.suite)."""
