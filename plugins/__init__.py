"""Built-in plugins: each registers through the mediagate.plugins entry point, like a third party."""
