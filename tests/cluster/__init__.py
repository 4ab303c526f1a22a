"""`ray up` against this machine over SSH (tests/cluster/conftest.py makes the node)."""
