"""Declarative policies: what is admitted, how models change, which gates a release must pass, who approves."""

from policies.schema import Policy, PolicyError, load_policy, merge_overrides

__all__ = ["Policy", "PolicyError", "load_policy", "merge_overrides"]
