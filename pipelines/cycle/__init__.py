"""The governed update cycle (may import everything below it): the stages, in order; each Dagster asset calls one."""
