"""The user's data (may import: core, model, state): admission of contract rows and the retrieval index."""
