"""The process around the data path: the server that wires it together, the admin HTTP app,
metrics, configuration, logging, the command line (run, demo, operator commands)."""
