"""Developer tools that read lakenet's source without importing it (`python -m lakenet.tools.layers`)."""
