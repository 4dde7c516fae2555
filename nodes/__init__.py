"""Built-in node types. Each module defines one or a few node classes registered via the ``klimaflow.nodes`` entry point group."""
