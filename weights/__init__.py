"""Built-in models shipped with palette, one model directory each (installed as palette_cli.weights)."""
