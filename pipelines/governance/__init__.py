"""Releases and who decides them (may import: core … forget): approvals, waivers, promotion with its canary, rollback,
the policy in force, `memgov init`, batch submissions and overrides, the releases view."""
