"""Method plugins chosen by name in a policy (may import: core, model, state, data): selection, update, edit, merge,
unlearning."""
