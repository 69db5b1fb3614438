"""The emulated cluster with the operator running (defined in test_operator.py), shared by the
other operator tests in this folder."""

from tests.k8s.test_operator import cluster, operator_role

__all__ = ["cluster", "operator_role"]
