"""klimaflow engine: flow model, loader, validation, runtime and CLI."""
