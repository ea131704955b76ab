"""The bottom layer: errors, the config groups every family shares, config loading against a schema passed
in, distributed-rank helpers, checkpoint reading and the `Family` contract. Imports nothing of vislab's."""
