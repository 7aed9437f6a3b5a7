"""The workflows behind the façade (`lakenet.api`): each one a module, the façade's functions thin wrappers."""
